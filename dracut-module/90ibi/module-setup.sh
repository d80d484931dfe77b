#!/bin/sh
# shellcheck disable=SC2154  # moddir, initdir, systemdsystemunitdir come from dracut
# dracut module "ibi": the root is a stack of squashfs images joined by overlayfs under one
# writable layer on a data partition (rd.ibi.data=). Needs the systemd initramfs.
# dracut sources this file (with bash); it is kept POSIX.

# called by dracut
check() {
    require_binaries mount umount chroot unshare stty || return 1
    # only when asked for (dracut --add ibi, or add_dracutmodules+=" ibi ")
    return 255
}

# called by dracut
depends() {
    echo systemd-initrd dracut-systemd
    return 0
}

# called by dracut
installkernel() {
    hostonly='' instmods overlay squashfs loop ext4
}

# called by dracut
install() {
    inst_multiple mount umount losetup chroot unshare stty env mkdir rmdir tr grep \
        cat sleep udevadm cksum head tail sed sh od stat sha256sum date sync
    inst_hook cmdline 90 "$moddir/parse-ibi.sh"
    inst_simple "$moddir/ibi-lib.sh" /usr/lib/ibi/ibi-lib.sh
    inst_simple "$moddir/ibi-check.sh" /usr/lib/ibi/ibi-check.sh
    inst_script "$moddir/ibi-assemble.sh" /usr/sbin/ibi-assemble
    for _unit in ibi-sysroot.service ibi-menu.service; do
        inst_simple "$moddir/$_unit" "$systemdsystemunitdir/$_unit"
    done
    $SYSTEMCTL -q --root "$initdir" add-requires initrd-root-fs.target ibi-sysroot.service
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target ibi-menu.service
}
