#!/usr/bin/env bash
# The crash-consistency campaign: records a fresh flash's first boot with a /boot seed
# write by write under QEMU (build/ or ATOMIX_IMAGE_DIR), rebuilds the disk at every
# flush, judges each point, tears the in-flight writes of a sample, and boots a spread of
# points to the end. Prints what it recorded, replayed, judged and booted, and every
# failure with its point (also in target/qemu-tests/crash-first-boot/report.txt).
#
# Usage: scripts/crash-campaign.sh [--boots N] [--torn N] [--seed N]
# (CI runs the same test with 2 boots and 24 torn points, seed 1.)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
boots=20 torn=200 seed=1
while [ $# -gt 0 ]; do
    case "$1" in
        --boots) boots="$2"; shift 2 ;;
        --torn) torn="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        *) echo "usage: $0 [--boots N] [--torn N] [--seed N]" >&2; exit 2 ;;
    esac
done
ATOMIX_CRASH_BOOTS="$boots" ATOMIX_CRASH_TORN="$torn" ATOMIX_CRASH_SEED="$seed" \
    exec cargo test --locked -p atomix-qemu-tests --test crash_consistency -- --nocapture
