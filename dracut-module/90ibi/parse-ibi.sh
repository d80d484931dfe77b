#!/bin/sh
# cmdline hook (sourced by dracut-cmdline): with rd.ibi.data= the root is ibi's image stack,
# assembled on /sysroot by ibi-sysroot.service. Do not also pass root=: systemd's
# fstab-generator would then make a sysroot.mount of its own.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh

if _ibi_data=$(getarg rd.ibi.data=) && [ -n "$_ibi_data" ]; then
    if getarg root= > /dev/null; then
        warn "ibi: rd.ibi.data= and root= are both given; root= is ignored, remove it"
    fi
    # shellcheck disable=SC2034  # read by dracut-cmdline after this hook
    root=ibi
    # shellcheck disable=SC2034
    rootok=1
    case $_ibi_data in
        LABEL=* | UUID=* | PARTUUID=* | PARTLABEL=*) _ibi_dev=$(label_uuid_to_dev "$_ibi_data") ;;
        /dev/*) _ibi_dev=$_ibi_data ;;
        *) _ibi_dev=/dev/disk/by-label/$_ibi_data ;;
    esac
    # dracut's timeout and message if the data partition never comes; ibi-sysroot.service
    # itself waits for the node (ibi_wait_dev: it may start before the disk is found)
    wait_for_dev -n "$_ibi_dev"
    info "ibi: data partition $_ibi_dev"
    unset _ibi_dev
fi
unset _ibi_data
