#!/usr/bin/env bash
# The README's main command: installs what is missing, builds the image if needed, and
# boots that very disk image in qemu-system-aarch64 through U-Boot, on a copy-on-write
# overlay. Serial console on this terminal (Ctrl-A X quits); the device's port 8080 is
# http://127.0.0.1:8080 (WAN) and http://127.0.0.1:8081 (LAN gateway address).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
scripts/build-image.sh
exec "${CARGO_TARGET_DIR:-target}/release/atomix-image" qemu "$@"
