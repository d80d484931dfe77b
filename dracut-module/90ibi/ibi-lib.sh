# shellcheck shell=sh disable=SC2034  # IBI_* results are read by the callers
# ibi-lib.sh: assemble the ibi image stack in the initramfs (sourced; POSIX sh).
#
# The data partition (rd.ibi.data=) holds D/.root_images/{bootplan,<name>.sqfs}, the writable
# layer D/layer/{upper,work} and D/home (see docs/FORMAT.md); only the boot plan is read.
# Every image is loop-mounted read-only on /run/ibi/lower/<n> (n=1 is the bottom) and
# overlayfs joins them on the target, top image first, given *relative* to /run/ibi/lower
# (lowerdir=3:2:1): Debian 13's mount uses fsconfig(2), which refuses an option value over
# 256 bytes, so absolute paths with image names broke after a handful of restore points.
# A list longer than that (over 88 images) goes one lowerdir+= option per layer (Linux >= 6.8,
# up to overlayfs's 500). The engine does the same (maintenance/mounts.py).

# Must equal maintenance.mounts.OVERLAY_OPTIONS (tests/vm/test_boot.py checks it).
IBI_OVERLAY_OPTIONS="redirect_dir=off,metacopy=off,index=off,xino=off"
IBI_RUN=/run/ibi
IBI_DATA=/run/ibi/data
IBI_LOWER=/run/ibi/lower
IBI_STORE=.root_images
IBI_MEMINFO=/proc/meminfo  # (tests point it elsewhere)
IBI_MIN_REVIEW_KIB=65536   # the Live Review's tmpfs is never smaller (64 MiB)
IBI_LIBDIR=${IBI_LIBDIR:-/usr/lib/ibi}  # where ibi-check.sh is (tests: the source tree)

# arg1: priority (err|warning|notice|info), rest: message
# Logs to the kernel log (so the journal has it); err/warning also go to the console.
ibi_log() {
    _prio=$1
    shift
    case $_prio in
        err) _n=3 ;;
        warning) _n=4 ;;
        notice) _n=5 ;;
        *) _n=6 ;;
    esac
    echo "<$_n>ibi: $*" > /dev/kmsg 2> /dev/null
    case $_prio in
        err | warning) echo "ibi: $*" > /dev/console 2> /dev/null ;;
    esac
    return 0
}

# prints: the rd.ibi.data= value turned into a device path; returns 1 if it is not given
ibi_data_dev() {
    _spec=$(getarg rd.ibi.data=) || return 1
    [ -n "$_spec" ] || return 1
    case $_spec in
        LABEL=* | UUID=* | PARTUUID=* | PARTLABEL=*) label_uuid_to_dev "$_spec" ;;
        /dev/*) echo "$_spec" ;;
        *) echo "/dev/disk/by-label/$_spec" ;;
    esac
}

# arg1: device; arg2: seconds to wait for it (udev creates it)
# returns: 0 when the block device exists
ibi_wait_dev() {
    # Returns as soon as the node exists: udevadm settle stops when it appears (or when
    # the event queue is empty: then a short nap, as the disk may not have been found
    # yet). The time limit is in seconds of uptime, whatever each turn took.
    read -r _t0 _ < /proc/uptime
    _t0=${_t0%%.*}
    _said=
    while [ ! -b "$1" ]; do
        read -r _now _ < /proc/uptime
        _now=$((${_now%%.*} - _t0))
        [ "$_now" -ge "$2" ] && return 1
        if [ -z "$_said" ] && [ "$_now" -ge 5 ]; then
            ibi_log notice "waiting for the data partition $1"
            _said=1
        fi
        udevadm settle --timeout=1 --exit-if-exists="$1" > /dev/null 2>&1
        [ -b "$1" ] || sleep 0.2
    done
    return 0
}

# Mounts the data partition read-write on $IBI_DATA (once).
# returns: 1 (with a message in IBI_ERROR) when it is missing or cannot be mounted
ibi_mount_data() {
    if ismounted "$IBI_DATA"; then
        return 0
    fi
    if ! _dev=$(ibi_data_dev); then
        IBI_ERROR="no rd.ibi.data= on the kernel command line"
        return 1
    fi
    _timeout=$(getarg rd.ibi.timeout=) || _timeout=90
    if ! ibi_wait_dev "$_dev" "${_timeout:-90}"; then
        IBI_ERROR="data partition $(getarg rd.ibi.data=) ($_dev) not found"
        return 1
    fi
    mkdir -p "$IBI_DATA"
    if ! _out=$(mount -o rw,noatime "$_dev" "$IBI_DATA" 2>&1); then
        IBI_ERROR="cannot mount the data partition $_dev: $_out"
        return 1
    fi
    if [ ! -d "$IBI_DATA/$IBI_STORE" ]; then
        IBI_ERROR="$_dev holds no ibi store (no $IBI_STORE/)"
        return 1
    fi
    ibi_log info "data partition $_dev mounted on $IBI_DATA"
    return 0
}

# The boot plan (.root_images/bootplan, docs/FORMAT.md) is the only file of the store read
# here: the engine writes it whenever roottab or the images change, so roottab and the image
# metadata have one reader, in Python.

# returns: 0 if the boot plan exists and was made from roottab as it is now (its "roottab"
#          line holds POSIX cksum's figures of the file) and for the writable layer there now
#          (its "layer" line: the layer's id; which kernel GRUB boots depends on the layer)
ibi_plan_current() {
    _plan=$IBI_DATA/$IBI_STORE/bootplan
    [ -f "$_plan" ] || return 1
    _want=
    _want_layer=
    while read -r _kw _rest || [ -n "$_kw" ]; do
        case $_kw in
            roottab) _want=$_rest ;;
            layer) _want_layer=$_rest ;;
        esac
    done < "$_plan"
    if [ -f "$IBI_DATA/$IBI_STORE/roottab" ]; then
        _have=$(cksum < "$IBI_DATA/$IBI_STORE/roottab") || return 1
    else
        _have=
    fi
    _have_layer=
    [ -f "$IBI_DATA/layer/id" ] && read -r _have_layer < "$IBI_DATA/layer/id"
    [ "$_have" = "$_want" ] && [ "$_have_layer" = "$_want_layer" ]
}

# arg1: words separated by blanks
# returns: 0 if every one is an image name (docs/FORMAT.md: 1-64 of A-Z a-z 0-9 . _ -, not
#          starting with . or -, not ending in .sqfs, .yaml or .tmp), so none is a path or
#          a pattern
ibi_names_ok() {
    case $1 in
        *[!A-Za-z0-9._[:blank:]-]*) return 1 ;;
    esac
    for _no_n in $1; do
        case $_no_n in
            [!A-Za-z0-9_]* | *.tmp | *.sqfs | *.yaml) return 1 ;;
        esac
        [ "${#_no_n}" -le 64 ] || return 1
    done
    return 0
}

# arg1: normal | fallback | menu | review; arg2: the image name (review only)
# prints: the matching stacks of the boot plan, one a line, image names bottom first (a
#         line with anything but image names, from a damaged plan, is left out)
ibi_plan_stacks() {
    [ -f "$IBI_DATA/$IBI_STORE/bootplan" ] || return 0
    while read -r _kw _rest || [ -n "$_kw" ]; do
        [ "$_kw" = "$1" ] || continue
        if [ "$1" = review ]; then
            [ "${_rest%% *}" = "$2" ] && ibi_names_ok "${_rest#* }" && echo "${_rest#* }"
        else
            ibi_names_ok "$_rest" && echo "$_rest"
        fi
    done < "$IBI_DATA/$IBI_STORE/bootplan"
    return 0
}

# arg1: normal | fallback | review; arg2: the image name (review only)
# sets: IBI_NAMES, the stack's image names, bottom first
# returns: 1 (message in IBI_ERROR) if the plan has no such stack or names a missing image
ibi_plan_stack() {
    IBI_NAMES=$(ibi_plan_stacks "$1" "$2" | head -n 1)
    if [ -z "$IBI_NAMES" ]; then
        case $1 in
            review) IBI_ERROR="no restore point named '$2' can be reviewed" ;;
            normal) IBI_ERROR="roottab is unusable (see ibi status)" ;;
            *) IBI_ERROR="no $1 stack in the boot plan" ;;
        esac
        return 1
    fi
    for _n in $IBI_NAMES; do
        if [ ! -f "$IBI_DATA/$IBI_STORE/$_n.sqfs" ]; then
            IBI_ERROR="image '$_n' is missing"
            return 1
        fi
    done
    return 0
}

# arg1: names, bottom first (separated by blanks)
# Checks the images (ibi_check_images), then loop-mounts each read-only on $IBI_LOWER/<n>;
# sets IBI_LOWERDIR (top first, relative to $IBI_LOWER) and IBI_LOWEROPTS (the overlay's
# lowerdir option(s) for it).
# returns: 1 (message in IBI_ERROR, nothing left mounted) on failure
ibi_mount_lowers() {
    IBI_LOWERDIR=""
    IBI_LOWEROPTS=""
    ibi_check_images "$1" || return 1
    _i=0
    _dirs=
    for _n in $1; do
        _i=$((_i + 1))
        _dirs="$_dirs $IBI_LOWER/$_i"
    done
    # shellcheck disable=SC2086  # one mkdir for all: IBI_LOWER holds no blank
    mkdir -p $_dirs
    _i=0
    for _n in $1; do
        _i=$((_i + 1))
        _dir=$IBI_LOWER/$_i
        if ! _out=$(mount -t squashfs -o ro,loop "$IBI_DATA/$IBI_STORE/$_n.sqfs" "$_dir" 2>&1); then
            IBI_ERROR="cannot mount image '$_n': $_out"
            ibi_umount_lowers
            return 1
        fi
        IBI_LOWERDIR="$_i${IBI_LOWERDIR:+:$IBI_LOWERDIR}"
        IBI_LOWEROPTS="lowerdir+=$_i${IBI_LOWEROPTS:+,$IBI_LOWEROPTS}"
    done
    [ -n "$IBI_LOWERDIR" ] || {
        IBI_ERROR="no image to mount"
        return 1
    }
    [ "${#IBI_LOWERDIR}" -gt 255 ] || IBI_LOWEROPTS="lowerdir=$IBI_LOWERDIR"
    return 0
}

# Unmounts every image under $IBI_LOWER and removes the mount points.
ibi_umount_lowers() {
    for _dir in "$IBI_LOWER"/*; do
        [ -d "$_dir" ] || continue
        ismounted "$_dir" && umount "$_dir"
        rmdir "$_dir" 2> /dev/null
    done
    return 0
}

# arg1: target; arg2: upperdir; arg3: workdir (uses IBI_LOWEROPTS)
ibi_mount_overlay() {
    if ! _out=$(cd "$IBI_LOWER" && mount -t overlay -o \
        "$IBI_LOWEROPTS,upperdir=$2,workdir=$3,$IBI_OVERLAY_OPTIONS" ibi "$1" 2>&1); then
        IBI_ERROR="cannot mount the overlay on $1: $_out"
        return 1
    fi
    return 0
}

# arg1: target (a writable overlay); binds D/home on the target's /home, as `ibi mount`
# does: a symbolic link /home -> /var/home is followed inside the target (never out to the
# initramfs's own tree), and a missing /home is made, so that nothing written to /home
# lands in the writable layer (restore points leave /home out).
ibi_bind_home() {
    [ -d "$IBI_DATA/home" ] || return 0
    _home=$1/home
    if [ -L "$_home" ]; then
        _link=$(readlink "$_home")
        case $_link in
            /*) _home=$1$_link ;;
            *) _home=$1/$_link ;;
        esac
    fi
    if [ ! -e "$_home" ] && [ ! -L "$_home" ]; then
        mkdir -p "$_home" && chmod 0755 "$_home"
    fi
    if [ -d "$_home" ] && [ ! -L "$_home" ]; then
        mount --bind "$IBI_DATA/home" "$_home" || ibi_log warning "cannot bind /home"
    else
        ibi_log warning "the root's /home is not a directory: the data partition's home is not bound"
    fi
    return 0
}

# The size of the Live Review's tmpfs (maintenance.bootplan.review_size_kib is the same
# rule, for `ibi review --size`): rd.ibi.review_size=N% is N percent of MemTotal (N 1..90),
# rd.ibi.review_size=N[KMG] is N KiB, MiB or GiB; by default, or when the value is neither
# (one warning), half of MemAvailable. Never under 64 MiB; rounded down to 4 KiB.
# sets: IBI_REVIEW_KIB, the size in KiB; IBI_REVIEW_WHY, how it was reached
ibi_review_size() {
    _rs_total=0
    _rs_avail=
    _rs_free=0
    while read -r _rs_k _rs_v _rs_u; do
        case $_rs_k in
            MemTotal:) _rs_total=$_rs_v ;;
            MemAvailable:) _rs_avail=$_rs_v ;;
            MemFree:) _rs_free=$_rs_v ;;
        esac
    done < "$IBI_MEMINFO"
    _rs_avail=${_rs_avail:-$_rs_free}
    IBI_REVIEW_KIB=
    if _rs_spec=$(getarg rd.ibi.review_size=); then
        _rs_num=${_rs_spec%[%kKmMgG]}
        # no leading zeros: sh arithmetic would read them as octal
        _rs_num=${_rs_num#"${_rs_num%%[!0]*}"}
        case $_rs_num in
            "" | *[!0-9]* | ??????????*) ;;
            *)
                case $_rs_spec in
                    *%) [ "$_rs_num" -le 90 ] && IBI_REVIEW_KIB=$((_rs_total * _rs_num / 100)) \
                        && IBI_REVIEW_WHY="rd.ibi.review_size=$_rs_spec of MemTotal $_rs_total kB" ;;
                    *[kK]) IBI_REVIEW_KIB=$_rs_num ;;
                    *[mM]) IBI_REVIEW_KIB=$((_rs_num * 1024)) ;;
                    *[gG]) IBI_REVIEW_KIB=$((_rs_num * 1048576)) ;;
                esac
                ;;
        esac
        case $_rs_spec in
            *%) ;;
            *) [ -n "$IBI_REVIEW_KIB" ] && IBI_REVIEW_WHY="rd.ibi.review_size=$_rs_spec" ;;
        esac
        [ -n "$IBI_REVIEW_KIB" ] || ibi_log warning "rd.ibi.review_size=$_rs_spec is not N% (1..90) or a size like 512M or 2G: using half of the available memory"
    fi
    if [ -z "$IBI_REVIEW_KIB" ]; then
        IBI_REVIEW_KIB=$((_rs_avail / 2))
        IBI_REVIEW_WHY="half of MemAvailable $_rs_avail kB"
    fi
    if [ "$IBI_REVIEW_KIB" -lt "$IBI_MIN_REVIEW_KIB" ]; then
        IBI_REVIEW_KIB=$IBI_MIN_REVIEW_KIB
        IBI_REVIEW_WHY="$IBI_REVIEW_WHY, raised to the 64 MiB minimum"
    fi
    IBI_REVIEW_KIB=$((IBI_REVIEW_KIB / 4 * 4))
    return 0
}

# arg1: target; arg2: names bottom first; arg3: "layer" or "tmpfs"
# Mounts the whole stack on target with the writable layer (or a tmpfs upper).
# returns: 1 (message in IBI_ERROR, nothing left mounted) on failure
ibi_assemble() {
    _target=$1
    ibi_mount_lowers "$2" || return 1
    if [ "$3" = tmpfs ]; then
        _rw=$IBI_RUN/review
        mkdir -p "$_rw"
        if ! ismounted "$_rw"; then
            ibi_review_size
            ibi_log notice "the Live Review's tmpfs: ${IBI_REVIEW_KIB} KiB ($IBI_REVIEW_WHY)"
            mount -t tmpfs -o "mode=0755,size=${IBI_REVIEW_KIB}k" ibi-review "$_rw" || {
                IBI_ERROR="cannot mount a tmpfs for the review"
                ibi_umount_lowers
                return 1
            }
        fi
        mkdir -p "$_rw/upper" "$_rw/work"
        _upper=$_rw/upper
        _work=$_rw/work
    else
        _upper=$IBI_DATA/layer/upper
        _work=$IBI_DATA/layer/work
        if [ ! -d "$_upper" ] || [ ! -d "$_work" ]; then
            IBI_ERROR="the writable layer ($_upper, $_work) is missing"
            ibi_umount_lowers
            return 1
        fi
    fi
    if ! ibi_mount_overlay "$_target" "$_upper" "$_work"; then
        ibi_umount_lowers
        return 1
    fi
    if [ ! -x "$_target/sbin/init" ] && [ ! -L "$_target/sbin/init" ]; then
        IBI_ERROR="the assembled stack has no /sbin/init"
        umount "$_target"
        ibi_umount_lowers
        return 1
    fi
    ibi_bind_home "$_target"
    return 0
}

# before anything is mounted: the boot counted (ibi_count_boot), the images checked
# (ibi_check_images)
# shellcheck source-path=SCRIPTDIR source=ibi-check.sh
. "$IBI_LIBDIR/ibi-check.sh"
