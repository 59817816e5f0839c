#!/usr/bin/env bash
# Boot benchmark: boots the built image (build/, or ATOMIX_IMAGE_DIR) several times under
# QEMU and prints, phase by phase, the median and spread of each (markdown tables, as in
# docs/performance.md). With --compare DIR, a second build output boots in the same run,
# interleaved, and the ratios of the medians are printed.
#
# Usage: scripts/bench-boot.sh [--runs N] [--compare DIR] [IMAGE_DIR]
# Each run is three boots (fresh flash with a seed, steady reboot, and the floor with
# first-boot.service masked), about 6 minutes under TCG; keep a build to compare against
# with e.g. `cp -a build /var/cache/atomix/bench/baseline-$(git rev-parse --short HEAD)`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
exec cargo bench --locked -p atomix-qemu-tests --bench boot -- "$@"
