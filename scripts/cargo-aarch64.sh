#!/usr/bin/env bash
# Runs cargo for the static aarch64 target (the Rock64 and the QEMU image) with Debian's
# rustc, which ships the arm64 standard library that rustup cannot download here.
# Usage: scripts/cargo-aarch64.sh build --profile initrd -p atomix-initrd
set -euo pipefail
export RUSTC=/usr/bin/rustc
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
# Static, non-PIE, no unwind tables (panic = abort), 4 KiB segment alignment: each saves
# size in the initramfs. This replaces the rustflags of .cargo/config.toml for this target.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C force-unwind-tables=no -C link-arg=-Wl,-z,max-page-size=4096"
exec cargo "$@" --target aarch64-unknown-linux-gnu
