#!/usr/bin/env bash
# Installs and configures everything the AtomixOS build and tests need on a Debian 12
# (bookworm) x86_64 host. Idempotent: run it as often as you like; it only changes what
# is missing. Used by the README's commands and by .ci/run.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: must run as root (apt-get, binfmt_misc, loop devices)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Packages for the host build (x86_64 and static aarch64), the privileged integration
# tests (loop devices, squashfs, repart, f2fs) and running arm64 binaries (qemu-user).
PACKAGES=(
    # Debian's Rust with an arm64 standard library; rustup cannot download targets here.
    rustc-web cargo-web libstd-rust-web-dev:arm64
    # The standard library's source: atomix-initrd builds its own std, without the
    # backtrace symbolizer (scripts/build-initrd-binary.sh).
    rust-web-src
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    libblkid-dev libblkid-dev:arm64 clang libclang-dev pkg-config
    # Disk tools used by atomix-initrd and its tests.
    util-linux fdisk mount systemd-container f2fs-tools dosfstools mtools
    squashfs-tools e2fsprogs file
    # Reading the built initramfs (image/tests/built_image.rs).
    zstd cpio
    # Running arm64 binaries on the host.
    qemu-user-static binfmt-support
    # The image builder and QEMU boots.
    # arch-test is only a Recommends of mmdebstrap, but an arm64 mmdebstrap on an amd64
    # host stops without it ("install arch-test for foreign architecture support").
    mmdebstrap arch-test debian-archive-keyring u-boot-tools bmap-tools openssh-client
    # Signed RAUC update bundles (atomix-image bundle).
    rauc openssl
    qemu-system-arm qemu-utils
    # The discovery test's LAN segment: a network namespace with a tap (ip netns, ip tuntap),
    # and the multicast DNS capture it keeps for a failure.
    iproute2 tcpdump
    # U-Boot, built from Debian's source package (image/src/uboot.rs): its build
    # dependencies, dpkg-source and patch.
    make bc bison flex device-tree-compiler libgnutls28-dev libpython3-dev libssl-dev
    python3 python3-libfdt python3-pyelftools python3-setuptools swig uuid-dev dpkg-dev patch
)

# binfmt_misc must be mounted before qemu-user-static is installed, or the package
# cannot register its interpreters.
if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    rm -f /var/lib/apt/periodic/atomix-apt-updated
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}"
    apt-get update -qq
    # A machine may come with a newer qemu-utils (backports) than bookworm's
    # qemu-system-arm accepts: install qemu-system-arm on its own first, which replaces
    # it, then the rest (bookworm's qemu-utils included).
    if [[ " ${missing[*]} " == *" qemu-system-arm "* ]]; then
        apt-get install -y -qq --no-install-recommends qemu-system-arm
        # That removes the newer qemu-utils, which then counts as missing.
        if ! dpkg-query -W -f='${Status}' qemu-utils 2>/dev/null | grep -q "install ok installed"; then
            missing+=(qemu-utils)
        fi
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# qemu-user-static registers its interpreters only when binfmt_misc was mounted at
# install time; re-register if an earlier install happened without it.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    if command -v update-binfmts >/dev/null; then
        update-binfmts --enable qemu-aarch64 || update-binfmts --import qemu-aarch64
    fi
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo "setup-host: qemu-aarch64 is not registered in binfmt_misc" >&2
    exit 1
fi

echo "setup-host: ready"
