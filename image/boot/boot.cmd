# AtomixOS boot script for U-Boot (compiled to boot.scr by the image builder).
# Runs from the boot partition U-Boot's distro boot found: ${devtype} ${devnum}:${distro_bootpart}.
# The image builder replaces @BUILD_ID@.

echo "AtomixOS build @BUILD_ID@"

# USB recovery: the reset/recovery button held from power-on for 5 s exposes the whole
# eMMC over the OTG port (USB mass storage) instead of booting. Boards without a button
# U-Boot can read (and QEMU) skip this.
setenv atomix_recovery 0
if button recovery; then
    echo "AtomixOS: recovery button held; keep holding 5 s for USB mass storage mode"
    setenv atomix_recovery 1
    for i in 1 2 3 4 5; do
        sleep 1
        if button recovery; then
            echo "AtomixOS: recovery in $i/5"
        else
            setenv atomix_recovery 0
        fi
    done
fi
if test "${atomix_recovery}" = "1"; then
    echo "AtomixOS: USB recovery: ${devtype} ${devnum} is exposed over USB; power-cycle to leave"
    ums 0 ${devtype} ${devnum}
    reset
fi

# Slot choice. A/B selection with boot counting comes with RAUC; until then, slot A.
setenv atomix_slot a
setenv rauc_slot A

# The slot's partitions on the disk U-Boot booted from (never a label search across disks).
if part number ${devtype} ${devnum} boot-${atomix_slot} atomix_bootpart; then
    true
else
    echo "AtomixOS: no boot-${atomix_slot} partition on ${devtype} ${devnum}"
    exit
fi
if part number ${devtype} ${devnum} rootfs-${atomix_slot} atomix_rootpart; then
    true
else
    echo "AtomixOS: no rootfs-${atomix_slot} partition on ${devtype} ${devnum}"
    exit
fi
part uuid ${devtype} ${devnum}:${atomix_rootpart} atomix_rootuuid

# The console and device tree: QEMU passes its own DTB; the Rock64 uses the board's.
if test "${board}" = "qemu-arm"; then
    setenv atomix_console ttyAMA0
    setenv atomix_fdt ${fdtcontroladdr}
else
    setenv atomix_console ttyS2,1500000
    load ${devtype} ${devnum}:${atomix_bootpart} ${fdt_addr_r} dtbs/rockchip/rk3328-rock64.dtb
    setenv atomix_fdt ${fdt_addr_r}
fi

load ${devtype} ${devnum}:${atomix_bootpart} ${kernel_addr_r} Image
load ${devtype} ${devnum}:${atomix_bootpart} ${ramdisk_addr_r} initrd.img
setenv atomix_initrd_size ${filesize}

setenv bootargs "console=${atomix_console} atomix.slot=${atomix_slot} rauc.slot=${rauc_slot} atomix.root=PARTUUID=${atomix_rootuuid} atomix.build=@BUILD_ID@ net.ifnames=0 audit=0 rootwait panic=10 systemd.show_status=auto"
echo "AtomixOS: booting slot ${atomix_slot} from ${devtype} ${devnum}:${atomix_bootpart}, root PARTUUID ${atomix_rootuuid}"
booti ${kernel_addr_r} ${ramdisk_addr_r}:${atomix_initrd_size} ${atomix_fdt}
echo "AtomixOS: booti failed"
