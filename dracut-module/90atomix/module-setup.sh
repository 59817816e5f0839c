#!/bin/bash
# dracut module "atomix": AtomixOS early boot in a systemd initramfs.
# Opt-in (dracut --add atomix): atomix-initrd, the partition layout (repart.d) and the
# tools systemd-repart needs, the units that order them, and sysroot.mount as the
# overlay of the booted slot's squashfs and a tmpfs.

# shellcheck disable=SC2154 # $initdir, $moddir, $systemdsystemunitdir come from dracut

check() {
    # Only when asked for.
    return 255
}

depends() {
    echo systemd
}

installkernel() {
    # The file systems and block layers of the sequence: the squashfs slot, the overlay
    # root, f2fs /data (and the compressors its options name), the vfat boot partition
    # (mounted at /sysroot/boot) with its code pages and Debian's default I/O character
    # set (nls_ascii: without it the mount fails with EINVAL), loop devices
    # (systemd-repart formats through them). The disk,
    # USB and watchdog drivers of each machine are in dracut.conf.d/atomix.conf.
    hostonly='' instmods -c squashfs overlay f2fs loop vfat nls_cp437 nls_iso8859-1 nls_ascii \
        crc32_generic || return 1
    hostonly='' instmods lz4_compress lz4hc_compress zstd_compress
}

install() {
    inst_binary /usr/lib/atomix/atomix-initrd /usr/bin/atomix-initrd
    inst_multiple systemd-repart mkfs.f2fs mkfs.vfat mkfs.fat blkid

    inst_dir /usr/lib/atomix/repart.d
    local def
    for def in /usr/lib/atomix/repart.d/*.conf; do
        inst_simple "$def"
    done

    inst_simple "$moddir/atomix-setup.service" "$systemdsystemunitdir/atomix-setup.service"
    inst_simple "$moddir/atomix-data.service" "$systemdsystemunitdir/atomix-data.service"
    inst_simple "$moddir/atomix-modules.conf" /etc/modules-load.d/atomix.conf
    inst_simple "$moddir/atomix-watchdog.conf" /usr/lib/systemd/system.conf.d/10-atomix-watchdog.conf
    inst_simple "$moddir/initrd-deadline.conf" "$systemdsystemunitdir/initrd.target.d/atomix-deadline.conf"
    # dracut's shell hooks have nothing to do here: the root is not named by root= (its
    # cmdline hook would stop the boot for want of one) and nothing runs before the
    # pivot. Each was a bash reading dracut-lib.sh, seconds under emulation.
    local unit
    mkdir -p "$initdir/etc/systemd/system"
    for unit in dracut-cmdline.service dracut-pre-pivot.service; do
        ln -sf /dev/null "$initdir/etc/systemd/system/$unit"
    done

    # sysroot.mount as atomix-initrd defines it.
    /usr/lib/atomix/atomix-initrd sysroot-unit > "$initdir$systemdsystemunitdir/sysroot.mount"

    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target atomix-setup.service
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target atomix-data.service
    mkdir -p "$initdir$systemdsystemunitdir/initrd-root-fs.target.requires"
    ln -sf ../sysroot.mount "$initdir$systemdsystemunitdir/initrd-root-fs.target.requires/sysroot.mount"
}
