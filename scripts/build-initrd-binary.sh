#!/usr/bin/env bash
# Builds the static aarch64 atomix-initrd for the initramfs, checks that it is static and
# within its size budget, runs it once under qemu-user, and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_BYTES=$((1280 * 1024)) # 1.25 MiB

# The standard library is built from Debian's source of this very rustc (rust-web-src),
# with none of its optional features: Debian's prebuilt one carries the backtrace
# symbolizer (gimli, addr2line, miniz_oxide, rustc-demangle) and its unwind tables, about
# 250 KiB that a panic=abort binary in an initramfs never uses. Panics still print their
# message and location; a backtrace is printed as addresses. `-Z build-std` is unstable
# cargo: RUSTC_BOOTSTRAP=1 allows it with the stable toolchain, as the kernel's own Rust
# build does.
RUSTC_BOOTSTRAP=1 scripts/cargo-aarch64.sh build --quiet --profile initrd -p atomix-initrd \
    -Z build-std=std,panic_abort -Z build-std-features= >&2
bin=${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/initrd/atomix-initrd
desc=$(file -b "$bin")
case "$desc" in
    *"ARM aarch64"*"statically linked"*) ;;
    *) echo "build-initrd-binary: $bin is not a static aarch64 executable: $desc" >&2; exit 1 ;;
esac
size=$(stat -c %s "$bin")
echo "build-initrd-binary: $bin: $size bytes ($(( size * 100 / MAX_BYTES ))% of the 1.25 MiB budget)" >&2
if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "build-initrd-binary: $bin is $size bytes, over the $MAX_BYTES-byte budget" >&2
    exit 1
fi
# The binary runs (qemu-user through binfmt_misc) and knows its commands.
"$bin" sysroot-unit | grep -q '^Where=/sysroot$' || {
    echo "build-initrd-binary: $bin does not run under qemu-user" >&2
    exit 1
}
echo "$bin"
