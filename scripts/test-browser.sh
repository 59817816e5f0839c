#!/usr/bin/env bash
# The web console's end-to-end test in headless Debian chromium:
#   scripts/setup-browser-tools.sh (chromium, node/npm if missing, npm ci), build
#   atomix-provision, run userspace/provision/web-tests/console.test.mjs against it.
# Screenshots, the service's log and the TAP results go to target/browser-tests/.
# Prints `browser: N passed, M failed` last; exits non-zero on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTS="$HERE/userspace/provision/web-tests"
export ARTIFACTS="$HERE/target/browser-tests"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

"$HERE/scripts/setup-browser-tools.sh"

cargo build --quiet --manifest-path "$HERE/Cargo.toml" -p atomix-provision --bin atomix-provision
export ATOMIX_PROVISION_BIN="${CARGO_TARGET_DIR:-$HERE/target}/debug/atomix-provision"

mkdir -p "$ARTIFACTS"
rm -f "$ARTIFACTS/results.tap"
status=0
(cd "$TESTS" && node --test \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$ARTIFACTS/results.tap" \
    console.test.mjs) || status=$?

passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$ARTIFACTS/results.tap" 2>/dev/null || true)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$ARTIFACTS/results.tap" 2>/dev/null || true)
passed=${passed:-0}
failed=${failed:-0}
# A run that died before reporting is a failure, not "0 failed".
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
fi
echo "browser: $passed passed, $failed failed (screenshots in $ARTIFACTS)"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
