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

# --- boot counting (docs/FORMAT.md, "Updates") ------------------------------------------
# A stack on trial has the plan lines "trial TRIES" and "good STACK". Each boot of it is
# counted here, before it is assembled, as one line appended to .root_images/boots (a line
# cut short by a power cut still counts); ibi-boot-ok.service clears the trial once a boot
# completes. When TRIES boots are counted, this boot falls back to the good stack instead.

# prints: the plan's trial tries (nothing when the normal stack is not on trial)
ibi_plan_tries() {
    [ -f "$IBI_DATA/$IBI_STORE/bootplan" ] || return 0
    while read -r _kw _rest || [ -n "$_kw" ]; do
        [ "$_kw" = trial ] || continue
        case $_rest in
            "" | *[!0-9]*) ;;
            *) echo "$_rest" ;;
        esac
        return 0
    done < "$IBI_DATA/$IBI_STORE/bootplan"
    return 0
}

# prints: the boots counted so far for the trial
ibi_boots_counted() {
    _bc_f=$IBI_DATA/$IBI_STORE/boots
    if [ -f "$_bc_f" ] && [ ! -L "$_bc_f" ]; then
        grep -c . "$_bc_f" 2> /dev/null || echo 0
    else
        echo 0
    fi
}

# Counts this boot of a stack on trial. returns: 0 when it may boot (not on trial, or a
# try is left: counted now, durably); 1 when its tries are used up (time to fall back)
ibi_count_boot() {
    _cb_tries=$(ibi_plan_tries)
    [ -n "$_cb_tries" ] && [ "$_cb_tries" -gt 0 ] || return 0
    _cb_boots=$(ibi_boots_counted)
    [ "$_cb_boots" -ge "$_cb_tries" ] && return 1
    _cb_boots=$((_cb_boots + 1))
    echo "boot $(date +%s 2> /dev/null)" >> "$IBI_DATA/$IBI_STORE/boots"
    sync
    if [ "$_cb_boots" -lt "$_cb_tries" ]; then
        ibi_log warning "the stack is on trial: boot $_cb_boots of $_cb_tries (it is marked good when a boot completes)"
    else
        ibi_log warning "the stack is on trial: LAST boot ($_cb_boots of $_cb_tries); if it does not complete, the next boot falls back to: $(ibi_plan_stacks good | head -n 1)"
    fi
    return 0
}

# --- images are checked before they are mounted -----------------------------------------
# Always: the file's size is the one in its metadata (the plan's "image NAME SIZE SHA256"
# line) and it starts with a sane squashfs superblock. With rd.ibi.verify=sha256 also its
# SHA-256 (once per boot: $IBI_RUN/verified remembers the images that matched).

# sets: IBI_VERIFY, "sha256" or "quick" (the default), from rd.ibi.verify=
ibi_verify_mode() {
    [ -n "$IBI_VERIFY" ] && return 0
    IBI_VERIFY=quick
    _vm=$(getarg rd.ibi.verify=) || return 0
    case $_vm in
        sha256 | quick) IBI_VERIFY=$_vm ;;
        *) ibi_log warning "rd.ibi.verify=$_vm is not sha256 or quick: checking sizes and superblocks only" ;;
    esac
    return 0
}

# arg1: image name
# prints: "SIZE SHA256" from the plan's image line for it; returns 1 if the plan has none
ibi_plan_image() {
    [ -f "$IBI_DATA/$IBI_STORE/bootplan" ] || return 1
    while read -r _pi_kw _pi_name _pi_size _pi_sum _pi_rest || [ -n "$_pi_kw" ]; do
        if [ "$_pi_kw" = image ] && [ "$_pi_name" = "$1" ]; then
            echo "$_pi_size $_pi_sum"
            return 0
        fi
    done < "$IBI_DATA/$IBI_STORE/bootplan"
    return 1
}

# The check of a whole stack (ibi_check_images) reads the plan's "image" lines once and
# every image's size from one stat, into files under $IBI_CHECK: plan/NAME holds "SIZE
# SHA256", size/NAME the file's size. Files, not one long shell string: taking a name's
# line out of a string (${s#*"NAME "}) is quadratic in dash and bash, and 101 images took
# 9 s on a host and 100 s under TCG that way.

# arg1: the image files (separated by blanks)
# sets: IBI_CHECK (empty if $IBI_RUN cannot hold it: each image is then read alone)
ibi_check_prepare() {
    IBI_CHECK=$IBI_RUN/check
    rm -rf "$IBI_CHECK"
    if ! mkdir -p "$IBI_CHECK/plan" "$IBI_CHECK/size" 2> /dev/null; then
        IBI_CHECK=
        return 0
    fi
    if [ -f "$IBI_DATA/$IBI_STORE/bootplan" ]; then
        while read -r _cp_kw _cp_name _cp_size _cp_sum _cp_rest || [ -n "$_cp_kw" ]; do
            [ "$_cp_kw" = image ] && ibi_names_ok "$_cp_name" \
                && echo "$_cp_size $_cp_sum" > "$IBI_CHECK/plan/$_cp_name"
        done < "$IBI_DATA/$IBI_STORE/bootplan"
    fi
    # "SIZE PATH" lines; an image stat cannot read has none (it is stat'ed again alone)
    # shellcheck disable=SC2086  # image names and IBI_DATA hold no blank
    stat -L -c '%s %n' $1 2> /dev/null | while read -r _cp_size _cp_path; do
        _cp_name=${_cp_path##*/}
        echo "$_cp_size" > "$IBI_CHECK/size/${_cp_name%.sqfs}"
    done
    return 0
}

# arg1: image name
# sets: IBI_PLAN_FOUND to "SIZE SHA256" from the plan's line for it
# returns: 1 if the plan has no line for it
ibi_plan_lookup() {
    if [ -z "$IBI_CHECK" ]; then
        IBI_PLAN_FOUND=$(ibi_plan_image "$1")
        return
    fi
    [ -f "$IBI_CHECK/plan/$1" ] || return 1
    read -r IBI_PLAN_FOUND < "$IBI_CHECK/plan/$1"
    return 0
}

# arg1: file; arg2: its size in bytes
# returns: 1 (the reason in IBI_ERROR) unless it starts with a squashfs 4.0 superblock whose
#          block size is a power of two 4K..1M and whose bytes_used fits in the file
ibi_check_superblock() {
    _sb_size=$2
    # the superblock's 48 bytes one by one: squashfs is little-endian on every CPU
    _sb=$(od -An -v -tu1 -N48 "$1" 2> /dev/null) || _sb=
    # shellcheck disable=SC2086  # split on purpose: one decimal a byte
    set -- $_sb
    if [ $# -lt 48 ]; then
        IBI_ERROR="shorter than a squashfs superblock ($_sb_size bytes)"
        return 1
    fi
    if [ "$1 $2 $3 $4" != "104 115 113 115" ]; then
        IBI_ERROR="not a squashfs image (no hsqs magic)"
        return 1
    fi
    if [ "${29} ${30} ${31} ${32}" != "4 0 0 0" ]; then
        IBI_ERROR="squashfs version $((${29} + ${30} * 256)).$((${31} + ${32} * 256)), not 4.0"
        return 1
    fi
    _sb_bs=$((${13} + ${14} * 256 + ${15} * 65536 + ${16} * 16777216))
    _sb_log=$((${23} + ${24} * 256))
    case $_sb_bs in
        4096 | 8192 | 16384 | 32768 | 65536 | 131072 | 262144 | 524288 | 1048576) ;;
        *) _sb_log=0 ;;
    esac
    if [ "$_sb_log" -lt 12 ] || [ "$_sb_log" -gt 20 ] || [ $((1 << _sb_log)) -ne "$_sb_bs" ]; then
        IBI_ERROR="bad squashfs block size $_sb_bs"
        return 1
    fi
    # bytes_used, le64 at offset 40; its two high bytes must be 0 (under 256 TiB)
    if [ "${47}${48}" != 00 ]; then
        IBI_ERROR="bad squashfs bytes_used"
        return 1
    fi
    _sb_used=$((${41} + ${42} * 256 + ${43} * 65536 + ${44} * 16777216))
    _sb_used=$((_sb_used + (${45} + ${46} * 256) * 4294967296))
    if [ "$_sb_used" -gt "$_sb_size" ]; then
        IBI_ERROR="truncated: the superblock says $_sb_used bytes, the file has $_sb_size"
        return 1
    fi
    return 0
}

# arg1: image name
# returns: 1 (one line in IBI_ERROR, also logged) if the image must not be mounted
ibi_check_image() {
    ibi_verify_mode
    _ci_file=$IBI_DATA/$IBI_STORE/$1.sqfs
    _ci_why=
    _ci_sum=
    _ci_size=
    [ -n "$IBI_CHECK" ] && [ -f "$IBI_CHECK/size/$1" ] && read -r _ci_size < "$IBI_CHECK/size/$1"
    if [ -z "$_ci_size" ] && ! _ci_size=$(stat -L -c %s "$_ci_file" 2> /dev/null); then
        _ci_why="cannot read $_ci_file"
    elif ibi_plan_lookup "$1"; then
        _ci_plan=$IBI_PLAN_FOUND
        _ci_sum=${_ci_plan#* }
        [ "$_ci_size" = "${_ci_plan%% *}" ] \
            || _ci_why="the file has $_ci_size bytes, its metadata says ${_ci_plan%% *}"
    else
        ibi_log notice "image '$1': the boot plan gives no size (an older ibi wrote it): checking its superblock only"
    fi
    if [ -z "$_ci_why" ] && ! ibi_check_superblock "$_ci_file" "$_ci_size"; then
        _ci_why=$IBI_ERROR
    fi
    if [ -z "$_ci_why" ] && [ "$IBI_VERIFY" = sha256 ]; then
        if [ -z "$_ci_sum" ]; then
            ibi_log warning "image '$1': no SHA-256 in the boot plan to verify it against"
        elif ! grep -qxF "$1 $_ci_size $_ci_sum" "$IBI_RUN/verified" 2> /dev/null; then
            ibi_log notice "verifying the SHA-256 of image '$1' ($_ci_size bytes)"
            _ci_have=$(sha256sum < "$_ci_file" 2> /dev/null) || _ci_have=
            _ci_have=${_ci_have%% *}
            if [ "$_ci_have" = "$_ci_sum" ]; then
                echo "$1 $_ci_size $_ci_sum" >> "$IBI_RUN/verified" 2> /dev/null
            else
                _ci_why="SHA-256 ${_ci_have:-unreadable}, its metadata says $_ci_sum"
            fi
        fi
    fi
    [ -z "$_ci_why" ] && return 0
    IBI_ERROR="image '$1' refused: $_ci_why"
    ibi_log err "$IBI_ERROR"
    return 1
}

# arg1: names, bottom first (separated by blanks)
# Checks every image (top first) before it mounts any.
# returns: 1 (message in IBI_ERROR) at the first that fails
ibi_check_images() {
    _cis_rev=
    _cis_files=
    for _cis_n in $1; do
        _cis_rev="$_cis_n $_cis_rev"
        _cis_files="$_cis_files $IBI_DATA/$IBI_STORE/$_cis_n.sqfs"
    done
    ibi_check_prepare "$_cis_files"
    for _cis_n in $_cis_rev; do
        ibi_check_image "$_cis_n" || { IBI_CHECK=; return 1; }
    done
    IBI_CHECK=  # read afresh by the next check (the menu may change the store)
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
