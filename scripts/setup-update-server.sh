#!/usr/bin/env bash
# Installs goosebit (a hawkBit DDI update server, from PyPI) for the fleet boot test
# (qemu-tests/tests/fleet.rs): python3-venv from Debian, then a virtual environment with
# the pinned versions of qemu-tests/update-server/requirements.txt, outside the clone in
# ${ATOMIX_CACHE:-/var/cache/atomix}/goosebit-venv (downloads cached beside it).
# Idempotent: pip checks the pins every run and installs only what differs.
# Must run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-update-server: must run as root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
CACHE="${ATOMIX_CACHE:-/var/cache/atomix}"
VENV="$CACHE/goosebit-venv"

for p in python3 python3-venv; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        echo "setup-update-server: installing $p"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "$p"
    fi
done

# Debian's python3, whatever else is first on PATH (pyenv, a user's own build): a
# virtual environment made from another one, or whose python is gone, is rebuilt.
PYTHON=/usr/bin/python3
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c '' 2>/dev/null \
    || ! grep -qx "home = $(dirname "$PYTHON")" "$VENV/pyvenv.cfg"; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check --cache-dir "$CACHE/pip" \
    -r qemu-tests/update-server/requirements.txt
"$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("goosebit", "uvicorn", "aerich")))' \
    || { echo "setup-update-server: goosebit does not import in $VENV" >&2; exit 1; }
echo "setup-update-server: goosebit $("$VENV/bin/pip" show goosebit | sed -n 's/^Version: //p') in $VENV"
