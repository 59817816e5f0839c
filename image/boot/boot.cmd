# AtomixOS boot script for U-Boot (compiled to boot.scr by the image builder).
# Runs from the boot partition U-Boot's distro boot found: ${devtype} ${devnum}:${distro_bootpart}.
# The image builder replaces @BUILD_ID@.

# U-Boot's distro boot runs the boot.scr of the first bootable partition (boot-a). That
# one chooses the slot, then hands over to the chosen slot's own boot.scr, which boots
# its kernel: each slot boots with the script of its own build. The handover passes
# atomix_chosen, rauc_slot, atomix_slot, atomix_bootpart and atomix_rootpart.
if test -z "${atomix_chosen}"; then
    # USB recovery: the recovery button held from power-on for 5 s exposes the whole eMMC
    # over the OTG port (USB mass storage) instead of booting. The image's U-Boot knows the
    # Rock64's Recovery key as "recovery"; under QEMU, virt's GPIO power key stands in for
    # it. A U-Boot without the button command (Debian's, on devices flashed before) skips
    # this.
    if test "${board}" = "qemu-arm"; then
        setenv atomix_recovery_button "GPIO Key Poweroff"
    else
        setenv atomix_recovery_button recovery
    fi
    setenv atomix_recovery 0
    if button "${atomix_recovery_button}"; then
        echo "AtomixOS: recovery button held; keep holding 5 s for USB mass storage mode"
        setenv atomix_recovery 1
        for i in 1 2 3 4 5; do
            sleep 1
            if button "${atomix_recovery_button}"; then
                echo "AtomixOS: recovery in $i/5"
            else
                setenv atomix_recovery 0
            fi
        done
    fi
    if test "${atomix_recovery}" = "1"; then
        echo "AtomixOS: USB recovery mode: ${devtype} ${devnum} is exposed over USB; Ctrl-C or power-cycle to leave"
        if ums 0 ${devtype} ${devnum}; then
            echo "AtomixOS: USB recovery ended"
        else
            echo "AtomixOS: USB recovery failed: ums could not expose ${devtype} ${devnum}"
        fi
        reset
    fi

    # A/B slot choice with boot counting, RAUC's U-Boot scheme: BOOT_ORDER ("A B") and
    # BOOT_<slot>_LEFT (tries left, 0-3). The first slot of the order with tries left and a
    # kernel is counted down and booted; Linux marks it good (tries back to 3) once the device
    # is up (atomix-provision slot, RAUC's backend). The state is two CRC-checked copies
    # (`env export -c`, 0x1000 bytes) at sectors 0x3000 and 0x3020 of this disk: copy 0 if
    # valid, else copy 1, else the factory state. Numbers below are hex, as U-Boot reads them.
    ${devtype} dev ${devnum}
    setenv atomix_state factory
    if ${devtype} read ${kernel_addr_r} 0x3000 8 && env import -c ${kernel_addr_r} 0x1000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
        setenv atomix_state "copy 0"
    elif ${devtype} read ${kernel_addr_r} 0x3020 8 && env import -c ${kernel_addr_r} 0x1000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
        setenv atomix_state "copy 1"
    else
        setenv BOOT_ORDER "A B"
        setenv BOOT_A_LEFT 3
        setenv BOOT_B_LEFT 3
    fi
    echo "AtomixOS: slot state (${atomix_state}): order ${BOOT_ORDER}, tries left A ${BOOT_A_LEFT} B ${BOOT_B_LEFT}"

    # A slot is bootable when its partitions exist and its boot partition holds a kernel (a
    # fresh device's slot B has neither until an update writes it).
    setenv atomix_A_ok 0
    if part number ${devtype} ${devnum} boot-a atomix_A_bootpart && part number ${devtype} ${devnum} rootfs-a atomix_A_rootpart && size ${devtype} ${devnum}:${atomix_A_bootpart} Image; then
        setenv atomix_A_ok 1
    fi
    setenv atomix_B_ok 0
    if part number ${devtype} ${devnum} boot-b atomix_B_bootpart && part number ${devtype} ${devnum} rootfs-b atomix_B_rootpart && size ${devtype} ${devnum}:${atomix_B_bootpart} Image; then
        setenv atomix_B_ok 1
    fi

    # Takes the slot if none is taken yet, it is bootable and has tries left; counts one down
    # (the Rock64's U-Boot has no setexpr: tries are 3, 2, 1, 0).
    setenv atomix_try_A 'if test -z "${atomix_slot}" && test "${atomix_A_ok}" = 1; then if test "${BOOT_A_LEFT}" = 3; then setenv BOOT_A_LEFT 2; setenv atomix_slot a; elif test "${BOOT_A_LEFT}" = 2; then setenv BOOT_A_LEFT 1; setenv atomix_slot a; elif test "${BOOT_A_LEFT}" = 1; then setenv BOOT_A_LEFT 0; setenv atomix_slot a; fi; fi'
    setenv atomix_try_B 'if test -z "${atomix_slot}" && test "${atomix_B_ok}" = 1; then if test "${BOOT_B_LEFT}" = 3; then setenv BOOT_B_LEFT 2; setenv atomix_slot b; elif test "${BOOT_B_LEFT}" = 2; then setenv BOOT_B_LEFT 1; setenv atomix_slot b; elif test "${BOOT_B_LEFT}" = 1; then setenv BOOT_B_LEFT 0; setenv atomix_slot b; fi; fi'
    setenv atomix_slot
    for atomix_s in ${BOOT_ORDER}; do
        run atomix_try_${atomix_s}
    done
    if test -z "${atomix_slot}"; then
        # Nothing left to try: start over rather than brick (slot A first unless B leads).
        echo "AtomixOS: no slot in order \"${BOOT_ORDER}\" has tries left and a kernel: tries reset to 3"
        setenv BOOT_A_LEFT 3
        setenv BOOT_B_LEFT 3
        if test "${BOOT_ORDER}" = "B" || test "${BOOT_ORDER}" = "B A"; then
            setenv BOOT_ORDER "B A"
        else
            setenv BOOT_ORDER "A B"
        fi
        for atomix_s in ${BOOT_ORDER}; do
            run atomix_try_${atomix_s}
        done
    fi
    if test -z "${atomix_slot}"; then
        echo "AtomixOS: no bootable slot on ${devtype} ${devnum}"
        exit
    fi
    env export -c -s 0x1000 ${kernel_addr_r} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
    ${devtype} write ${kernel_addr_r} 0x3000 8
    ${devtype} write ${kernel_addr_r} 0x3020 8
    if test "${atomix_slot}" = b; then
        setenv rauc_slot B
        setenv atomix_bootpart ${atomix_B_bootpart}
        setenv atomix_rootpart ${atomix_B_rootpart}
    else
        setenv rauc_slot A
        setenv atomix_bootpart ${atomix_A_bootpart}
        setenv atomix_rootpart ${atomix_A_rootpart}
    fi
    echo "AtomixOS: slot ${rauc_slot} chosen, tries left now A ${BOOT_A_LEFT} B ${BOOT_B_LEFT}"
    setenv atomix_chosen 1
    if itest ${distro_bootpart} != ${atomix_bootpart}; then
        if load ${devtype} ${devnum}:${atomix_bootpart} ${pxefile_addr_r} boot.scr; then
            echo "AtomixOS: handing over to the boot script of slot ${rauc_slot}"
            source ${pxefile_addr_r}
        fi
        echo "AtomixOS: slot ${rauc_slot} has no usable boot.scr: booting it with this one"
    fi
fi

echo "AtomixOS build @BUILD_ID@"
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

# gpt: when the primary GPT is torn (a power cut while systemd-repart writes it, after
# the new backup), the kernel reads the backup at the end of the disk, as U-Boot and
# atomix-initrd do; without it the kernel finds no partition and the boot stops.
setenv bootargs "console=${atomix_console} atomix.slot=${atomix_slot} rauc.slot=${rauc_slot} atomix.root=PARTUUID=${atomix_rootuuid} atomix.build=@BUILD_ID@ gpt net.ifnames=0 audit=0 rootwait panic=10 systemd.show_status=auto@KERNEL_ARGS@"
echo "AtomixOS: booting slot ${atomix_slot} from ${devtype} ${devnum}:${atomix_bootpart}, root PARTUUID ${atomix_rootuuid}"
booti ${kernel_addr_r} ${ramdisk_addr_r}:${atomix_initrd_size} ${atomix_fdt}
echo "AtomixOS: booti failed"
