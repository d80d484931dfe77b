# shellcheck shell=sh
# ibi-check.sh: what the initramfs decides before it mounts a stack: whether a stack on
# trial may boot again, and whether its images are sound (sourced by ibi-lib.sh, whose
# functions and IBI_* settings it uses; POSIX sh).

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
