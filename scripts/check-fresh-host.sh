#!/usr/bin/env bash
# Proves the host set-up complete from nothing: a throwaway Debian 12 (bookworm amd64)
# root, as a new machine has it, runs scripts/setup-host.sh and scripts/setup-config-tools.sh
# from a copy of this tree, then exercises the build's tools there: an arm64 mmdebstrap,
# the static aarch64 cross build of atomix-initrd (qemu-user runs it), dracut in an arm64
# tree, and the image tools. Any missing tool fails the check and is named.
#
# What the fresh root starts with, and why:
# - `mmdebstrap --variant=minbase` of bookworm (+ updates, security) with what the
#   machine kind's docs list on every new machine besides Debian itself: gcc, git,
#   ca-certificates (and python3, curl). Cached as a tarball keyed by the date and this
#   package list: ${ATOMIX_CACHE:-/var/cache/atomix}/fresh-host/.
# - rustup's toolchain (cargo, rustc), which a new machine has: the host's /root/.rustup
#   and /root/.cargo/bin are bind-mounted READ-ONLY; the rest of CARGO_HOME (the crate
#   registry) starts empty, its downloads kept in the cache between runs.
# - The machine's extra CA certificates (/usr/local/share/ca-certificates), through
#   which its network reaches the registries.
# - Downloaded .deb files are kept between runs (the root's /var/cache/apt/archives is
#   a cache directory): a re-run downloads less, but installs everything again.
# - /proc, /sys and /dev are the host's (bind mounts). binfmt_misc is not namespaced for
#   a chroot: the root sees the host's registrations, so the arm64 programs run through
#   the host's qemu-aarch64 entry (registered with the F flag, it works in any root).
#   The root's own registration is checked as far as it can be: qemu-user-static's
#   binfmt spec must be installed and known to update-binfmts inside the root. The
#   root's package scripts register their formats in that shared table too; on a host
#   set up by setup-host.sh they are the same formats (qemu-*, python3.11, jar, llvm)
#   and are found already registered, so the host's table is left as it was.
#
# Usage: scripts/check-fresh-host.sh   (as root, on a Debian 12 host with mmdebstrap)
# Heavy: a few hundred MiB of packages and two debootstraps; prints each step's time.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

fail() { echo "check-fresh-host: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root (mmdebstrap, chroot, mounts)"
command -v mmdebstrap >/dev/null || fail "mmdebstrap is missing on this host: run scripts/setup-host.sh"
[ -x /root/.cargo/bin/cargo ] && [ -d /root/.rustup ] \
    || fail "no rustup toolchain in /root/.cargo and /root/.rustup to give the fresh root"

CACHE="${ATOMIX_CACHE:-/var/cache/atomix}/fresh-host"
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# On every new machine of this kind besides Debian's minimal system (see the top).
BASE_PACKAGES=(gcc libc6-dev git ca-certificates python3 curl)
KEY=$(printf '%s\n' "$SUITE" "${BASE_PACKAGES[@]}" | sha256sum | cut -c1-12)
BASE="$CACHE/base-$SUITE-$(date +%Y%m%d)-$KEY.tar"
WORK="$CACHE/work"
ROOT="$WORK/root"
mkdir -p "$CACHE/debs" "$CACHE/cargo-registry" "$CACHE/cargo-git"

started=$(date +%s)
step() { echo "check-fresh-host: ==> $* (at $(( $(date +%s) - started )) s)"; }

mounts_below_root() { findmnt -rn -o TARGET | grep -E "^$ROOT(/|$)" | sort -r || true; }
# Unmounts everything below the root, deepest first.
cleanup() {
    mounts_below_root | while read -r m; do umount -l "$m" || true; done
}
trap cleanup EXIT

step "base root ($BASE)"
if [ ! -s "$BASE" ]; then
    rm -rf "$CACHE"/base-"$SUITE"-*.tar "$CACHE/partial.tar"
    mmdebstrap --variant=minbase --arch=amd64 \
        --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
        "$SUITE" "$CACHE/partial.tar" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
        "deb http://deb.debian.org/debian-security $SUITE-security main"
    mv "$CACHE/partial.tar" "$BASE"
fi

step "unpacking the fresh root in $ROOT"
cleanup
# Never remove through a mount: that would reach into the host's /dev or the caches.
[ -z "$(mounts_below_root)" ] || fail "still mounted below $ROOT: $(mounts_below_root | tr '\n' ' ')"
rm -rf "$WORK"
mkdir -p "$ROOT"
tar -C "$ROOT" -xf "$BASE"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The machine's own CA certificates, which every machine of this kind has: its network
# reaches the package registries (crates.io for the cross build) through them.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null
fi
# The tree as it is now (tracked files, with uncommitted changes), without build output.
mkdir -p "$ROOT/work/atomix"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && tar --null -T - -cf -) | tar -C "$ROOT/work/atomix" -xf -

mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"
mount --rbind /proc "$ROOT/proc" && mount --make-rslave "$ROOT/proc"
mount --rbind /sys "$ROOT/sys" && mount --make-rslave "$ROOT/sys"
mount -t tmpfs tmpfs "$ROOT/run"
mount -t tmpfs tmpfs "$ROOT/tmp"
mkdir -p "$ROOT/var/cache/apt/archives" "$ROOT/root/.cargo/bin" "$ROOT/root/.rustup" \
    "$ROOT/root/.cargo/registry" "$ROOT/root/.cargo/git"
mount --bind "$CACHE/debs" "$ROOT/var/cache/apt/archives"
mount --bind "$CACHE/cargo-registry" "$ROOT/root/.cargo/registry"
mount --bind "$CACHE/cargo-git" "$ROOT/root/.cargo/git"
for d in .rustup .cargo/bin; do
    mount --bind "/root/$d" "$ROOT/root/$d"
    mount -o remount,bind,ro "$ROOT/root/$d"
done

step "inside the fresh root"
# Everything from here runs in the root, with a plain environment as on a new machine.
cat > "$ROOT/work/check.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
export PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo
# The root's own cache, empty: what the build caches, it builds here from nothing.
export ATOMIX_CACHE=/work/cache
t0=$(date +%s)
t=$t0
timed() { local now; now=$(date +%s); echo "check-fresh-host: $1: $((now - t)) s"; t=$now; }
missing() { echo "check-fresh-host: FAILED: $1 is missing after the set-up ($2)" >&2; exit 1; }
cd /work/atomix

scripts/setup-host.sh
timed "scripts/setup-host.sh"
scripts/setup-config-tools.sh
timed "scripts/setup-config-tools.sh"
scripts/setup-update-server.sh
timed "scripts/setup-update-server.sh"
"$ATOMIX_CACHE/goosebit-venv/bin/python" -m uvicorn --version >/dev/null \
    || missing "uvicorn" "the goosebit virtual environment, from scripts/setup-update-server.sh"

# Every tool the build and the tests call, by the package that must bring it.
while read -r tool package; do
    command -v "$tool" >/dev/null || missing "$tool" "package $package, from scripts/setup-host.sh"
done <<'TOOLS'
cargo rustup-toolchain-(bind-mounted)
rustc rustc-web
aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
pkg-config pkg-config
clang clang
mmdebstrap mmdebstrap
arch-test arch-test
qemu-aarch64-static qemu-user-static
update-binfmts binfmt-support
mksquashfs squashfs-tools
mcopy mtools
mmd mtools
mdir mtools
mkfs.vfat dosfstools
mkfs.f2fs f2fs-tools
fsck.f2fs f2fs-tools
mkfs.ext4 e2fsprogs
sfdisk fdisk
losetup mount
systemd-repart systemd-container/systemd
mkimage u-boot-tools
bmaptool bmap-tools
ssh-keygen openssh-client
rauc rauc
openssl openssl
qemu-system-aarch64 qemu-system-arm
qemu-img qemu-utils
file file
TOOLS
[ -e /usr/lib/aarch64-linux-gnu/pkgconfig/blkid.pc ] || missing "blkid.pc for arm64" "libblkid-dev:arm64"
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || missing "the arm64 Rust standard library" "libstd-rust-web-dev:arm64"
# The root's own binfmt registration for qemu-aarch64 (the kernel's is the host's).
[ -e /var/lib/binfmts/qemu-aarch64 ] || missing "the qemu-aarch64 binfmt spec" "qemu-user-static"
update-binfmts --display qemu-aarch64 | grep -q 'package = qemu-user-static' \
    || missing "qemu-aarch64 in update-binfmts" "qemu-user-static with binfmt-support"
qemu-system-aarch64 --version | head -1
qemu-img --version | head -1
mkimage -V
bmaptool --version
mksquashfs -version | head -1
timed "tools present"

# An arm64 root, as the image's base tree is made (arch-test, qemu-user).
# (dracut exits 1 after --help and --version alike: its output is what is checked.)
mmdebstrap --arch=arm64 --variant=essential --include=dracut-core \
    --customize-hook='chroot "$1" uname -m > "$1/arch"' \
    --customize-hook='chroot "$1" dracut --version | grep "^dracut [0-9]"' \
    --customize-hook='copy-out /arch /tmp' \
    bookworm /tmp/arm64.tar http://deb.debian.org/debian \
    || { echo "check-fresh-host: FAILED: the arm64 mmdebstrap with dracut (see its E: lines)" >&2; exit 1; }
[ "$(cat /tmp/arch)" = aarch64 ] || { echo "check-fresh-host: FAILED: the arm64 root runs as $(cat /tmp/arch)" >&2; exit 1; }
timed "arm64 mmdebstrap (essential + dracut-core), dracut runs under qemu-user"

# The static aarch64 cross build, run once under qemu-user.
scripts/build-initrd-binary.sh \
    || { echo "check-fresh-host: FAILED: the static aarch64 build (see above)" >&2; exit 1; }
timed "static aarch64 atomix-initrd (scripts/build-initrd-binary.sh)"
echo "check-fresh-host: inside the root: $((t - t0)) s"
EOF
chmod +x "$ROOT/work/check.sh"
chroot "$ROOT" /usr/bin/env -i /bin/bash /work/check.sh \
    || fail "in the fresh root (see above: the first FAILED line names what is missing)"

step "done"
echo "check-fresh-host: ok: a fresh $SUITE root set itself up and ran the build's tools in $(( $(date +%s) - started )) s"
