#!/bin/sh
# init of the judge VM (qemu-tests/src/crash/files.rs), appended to the image's own
# initramfs and started instead of its /init (rdinit=). The image's kernel mounts each
# data filesystem the host attached as the device would (f2fs roll-forward recovery
# included; QEMU keeps the writes in a throwaway overlay), lists the files the design
# makes crash-safe, and powers off. The disk with serial "image" is the flashed image:
# its root filesystem (rootfs-a, squashfs) lends the tools for listing.
#
# Output, on the console, one line each, fields separated by tabs:
#   @judge<TAB>disk<TAB>SERIAL                 a data disk begins
#   @judge<TAB>d<TAB>PATH                      a directory
#   @judge<TAB>l<TAB>PATH<TAB>TARGET           a symbolic link
#   @judge<TAB>f<TAB>PATH<TAB>SIZE             a regular file
#   @judge<TAB>o<TAB>PATH                      anything else
#   @judge<TAB>sum<TAB>SHA256<TAB>PATH         a regular file's digest
#   @judge<TAB>body<TAB>PATH<TAB>HEX           the marker's and job records' contents
#   @judge<TAB>mount-failed<TAB>SERIAL<TAB>WHY the kernel refused the filesystem
#   @judge<TAB>list-failed<TAB>SERIAL<TAB>WHY  listing it failed (an I/O error)
#   @judge<TAB>end<TAB>SERIAL                  the disk is done
#   @judge<TAB>fatal<TAB>WHY                   the VM could not judge at all
#   @judge<TAB>done                            every disk is done
# PATHs are relative to the data filesystem's root.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
T=$(printf '\t')
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() {
    line="@judge"
    for field in "$@"; do line="$line$T$field"; done
    echo "$line"
}
off() {
    echo o >/proc/sysrq-trigger
    sleep 600
}
# Its arguments on one line, spaces for every run of white space.
flat() {
    set -f
    echo $*
    set +f
}
fatal() {
    say fatal "$*"
    off
}

want=
read -r cmdline </proc/cmdline
for word in $cmdline; do
    case "$word" in
    atomix.judge.disks=*) want=${word#*=} ;;
    esac
done
[ -n "$want" ] || fatal "no atomix.judge.disks= on the command line"

modprobe -a virtio_blk squashfs f2fs || fatal "cannot load virtio_blk, squashfs, f2fs"

# Every attached disk (the data disks and the image) has appeared with its serial.
tries=0
while :; do
    n=0
    for s in /sys/block/vd*/serial; do [ -e "$s" ] && n=$((n + 1)); done
    [ "$n" -ge $((want + 1)) ] && break
    tries=$((tries + 1))
    [ "$tries" -le 600 ] || fatal "only $n of $((want + 1)) disks appeared"
    sleep 0.1
done

image=
for s in /sys/block/vd*/serial; do
    read -r serial <"$s"
    dev=${s#/sys/block/}
    dev=${dev%/serial}
    [ "$serial" = image ] && image=$dev
done
[ -n "$image" ] || fatal "no disk with serial image"
tries=0
while [ ! -b "/dev/${image}2" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || fatal "/dev/${image}2 (rootfs-a) did not appear"
    sleep 0.1
done
mkdir -p /judge
mount -t squashfs -o ro "/dev/${image}2" /judge || fatal "cannot mount rootfs-a of the image"
# The initramfs has no chroot of its own: the image's runs on the initramfs's C library
# (both from the same tree).
chroot=/judge/usr/sbin/chroot
[ -x "$chroot" ] || fatal "the image has no $chroot"

# Run inside the image's root, with the data filesystem at /mnt.
list='
set -e
cd /mnt
# The two trees, as the root directory lists them (a lookup error fails the listing
# instead of looking like an absent tree).
tops=$(find . -mindepth 1 -maxdepth 1 \( -name atomix -o -name config \) -printf "%P\n")
for top in $tops; do
    find "$top" \( -type d -printf "@judge\td\t%p\n" \) -o \( -type l -printf "@judge\tl\t%p\t%l\n" \) \
        -o \( -type f -printf "@judge\tf\t%p\t%s\n" \) -o -printf "@judge\to\t%p\n"
    find "$top" -type f -exec sha256sum {} + | while read -r sum path; do
        printf "@judge\tsum\t%s\t%s\n" "$sum" "$path"
    done
done
for body in atomix/fresh-flash config/jobs/*.json; do
    [ -f "$body" ] || continue
    printf "@judge\tbody\t%s\t%s\n" "$body" "$(od -An -v -tx1 <"$body" | tr -d " \n")"
done
'

for s in /sys/block/vd*/serial; do
    read -r serial <"$s"
    [ "$serial" = image ] && continue
    dev=${s#/sys/block/}
    dev=${dev%/serial}
    say disk "$serial"
    if why=$(mount -t f2fs -o noatime "/dev/$dev" /judge/mnt 2>&1); then
        "$chroot" /judge /bin/sh -c "$list" || say list-failed "$serial" "exit $?"
        umount /judge/mnt || say mount-failed "$serial" "cannot unmount"
    else
        kernel=$("$chroot" /judge /bin/sh -c 'dmesg -S | grep -i f2fs | tail -n 3 | tr "\n" " "')
        say mount-failed "$serial" "$(flat "$why $kernel")"
    fi
    say end "$serial"
done
say done
off
