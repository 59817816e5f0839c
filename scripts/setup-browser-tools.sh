#!/usr/bin/env bash
# Installs what the web console's browser test uses (scripts/test-browser.sh):
#   Debian's chromium (the browser; playwright never downloads one), node and npm if
#   missing, openssh-client (ssh-keygen signs in the test), and the test's npm packages
#   (playwright-core, pinned by package-lock.json) with `npm ci`.
# Idempotent: apt runs only for missing packages; `npm ci` only when node_modules does
# not match the lock file. Must run as root for apt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTS="$HERE/userspace/provision/web-tests"
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in chromium openssh-client; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-browser-tools: must run as root to install ${missing[*]}" >&2
        exit 1
    fi
    echo "setup-browser-tools: installing ${missing[*]}"
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# npm ci wipes and reinstalls node_modules: only when the lock changed since the last
# successful run (the stamp holds the lock's hash) or the package is missing.
STAMP="$TESTS/node_modules/.atomix-lock.sha256"
want="$(sha256sum "$TESTS/package-lock.json" | cut -d' ' -f1)"
if [ ! -d "$TESTS/node_modules/playwright-core" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "setup-browser-tools: npm ci in $TESTS"
    # playwright-core never downloads browsers; the variable guards against a future
    # dependency that would.
    (cd "$TESTS" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
    echo "$want" >"$STAMP"
fi

/usr/bin/chromium --version 2>/dev/null
echo "setup-browser-tools: ok (chromium, node $(node --version), playwright-core in $TESTS/node_modules)"
