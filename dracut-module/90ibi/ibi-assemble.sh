#!/bin/sh
# ibi-assemble: the initramfs side of ibi (run by ibi-menu.service and ibi-sysroot.service).
#
#   ibi-assemble menu       rd.ibi.maintenance: run the maintenance menu, record its decision
#   ibi-assemble sysroot    assemble /sysroot: the decision, rd.ibi.review=NAME, or normal
#   ibi-assemble menu-inner (internal) the menu in a private mount namespace
#   ibi-assemble pending-inner (internal) the action queued for this boot, likewise
#   ibi-assemble plan-inner (internal) renew a stale boot plan, likewise
#   ibi-assemble fallback-inner (internal) the fallback of a stack on trial, likewise
#
# What to mount comes from the boot plan alone (.root_images/bootplan, written by the
# engine); a stale plan is renewed first by the image's own `ibi boot-entries --write`.
#
# Both units first carry out an action queued from the running system (ibi restore/create
# --next-boot, or the menu there), with Python from the image, before anything else.
#
# A stack on trial (a switch, a roll back, a new restore point: docs/FORMAT.md "Updates") has
# each normal boot counted before it is assembled; once its tries are used up, the good stack
# becomes the active one again (the good stack's own `ibi boot-fallback`), durably.
#
# Normal boot: the plan's normal stack (roottab); if it is unusable, its fallback (roottab.prev);
# if that fails too, the menu opens with the error; if even the menu cannot run, the console
# says why and offers to retry, a shell or to go on.

# shellcheck source=/dev/null
type getarg > /dev/null 2>&1 || . /lib/dracut-lib.sh
# shellcheck source=/dev/null
. /usr/lib/ibi/ibi-lib.sh

NEWROOT=${NEWROOT:-/sysroot}
MENU_ROOT=$IBI_RUN/menu-root
DECISION=$IBI_RUN/decision
MODE=$IBI_RUN/mode

# arg1: message; prints a framed error on the console and in the journal
ibi_fail_banner() {
    ibi_log err "$1"
    {
        echo
        echo "************************************************************"
        echo "ibi: cannot boot: $1"
        echo "************************************************************"
        echo
    } > /dev/console 2> /dev/null
}

# prints: the stacks the menu (or any Python of the image) can run from, best first, one a
#         line: the plan's menu stacks, else (a store without a plan) each image alone
menu_stacks() {
    _s=$IBI_DATA/$IBI_STORE
    if [ -f "$_s/bootplan" ]; then
        ibi_plan_stacks menu
        return 0
    fi
    for _img in "$_s"/*.sqfs; do
        [ -f "$_img" ] || continue
        _n=${_img##*/}
        echo "${_n%.sqfs}"
    done
}

# Runs inside `unshare --mount`: every mount made here vanishes with the namespace.
# Mounts the stack read-only under a tmpfs upper with /dev, /proc, /sys, /run and the data
# partition bound in, and runs ibi there (Python from the image itself).
# arg1: "menu", "pending" or "plan"; arg2: an error to show in the menu (may be empty)
image_inner() {
    _what=$1
    _err=$2
    mount --make-rprivate /
    mkdir -p "$IBI_RUN/menu-rw" "$MENU_ROOT"
    # the first candidate stack that mounts and has ibi in it (for a fallback: the good
    # stack's own, never the one that failed)
    _ok=
    if [ "$_what" = fallback ]; then
        _stacks=$(ibi_plan_stacks good | tr ' ' ',')
    else
        _stacks=$(menu_stacks | tr ' ' ',')
    fi
    for _stack in $_stacks; do
        _stack=$(echo "$_stack" | tr ',' ' ')
        if ! ibi_mount_lowers "$_stack"; then
            echo "ibi: $IBI_ERROR" >&2
            continue
        fi
        mount -t tmpfs -o mode=0755 ibi-menu-rw "$IBI_RUN/menu-rw" || return 1
        mkdir -p "$IBI_RUN/menu-rw/upper" "$IBI_RUN/menu-rw/work"
        if ibi_mount_overlay "$MENU_ROOT" "$IBI_RUN/menu-rw/upper" "$IBI_RUN/menu-rw/work"; then
            if [ -x "$MENU_ROOT/usr/bin/ibi" ]; then
                _ok=1
                break
            fi
            echo "ibi: the stack [$_stack] has no /usr/bin/ibi" >&2
            umount "$MENU_ROOT"
        else
            echo "ibi: $IBI_ERROR" >&2
        fi
        umount "$IBI_RUN/menu-rw"
        ibi_umount_lowers
    done
    if [ -z "$_ok" ]; then
        echo "ibi: no image stack can run ibi (is the ibi package installed in the images?)" >&2
        return 1
    fi
    mount --rbind /dev "$MENU_ROOT/dev"
    mount -t proc proc "$MENU_ROOT/proc"
    mount --rbind /sys "$MENU_ROOT/sys"
    mount --bind /run "$MENU_ROOT/run"
    mkdir -p "$MENU_ROOT$IBI_DATA"
    mount --bind "$IBI_DATA" "$MENU_ROOT$IBI_DATA"
    case $_what in
        pending) set -- pending --run ;;
        plan) set -- boot-entries --write ;;
        fallback) set -- boot-fallback ;;
        *)
            [ -n "$_err" ] && echo "$_err" > "$IBI_RUN/boot-error"
            : > "$IBI_RUN/menu-started"
            set -- menu
            ;;
    esac
    # the menu's own command when the image has it (an older ibi has only `ibi menu`)
    _cmd=ibi
    if [ "$1" = menu ] && [ -x "$MENU_ROOT/usr/bin/ibi-menu" ]; then
        _cmd=ibi-menu
        shift
    fi
    # `ibi` as the package installs it, found on PATH (/usr/bin/ibi); IBI_RECLAIM=later: a
    # layer a restore point cleared is deleted after the boot (ibi-reclaim.service), not by
    # a process left running on these mounts
    chroot "$MENU_ROOT" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root TERM="${TERM:-vt220}" LANG=C.UTF-8 IBI_BOOT_ERROR="$_err" IBI_RECLAIM=later \
        "$_cmd" "$@" --data "$IBI_DATA"
}

# Carries out the action queued for this boot, if any (the engine clears it once done; a
# failure is logged and left queued, and the boot goes on).
run_pending() {
    [ -e "$IBI_DATA/$IBI_STORE/pending" ] || return 0
    ibi_log notice "carrying out the action queued for this boot: $(tr '\n' ' ' < "$IBI_DATA/$IBI_STORE/pending")"
    echo "ibi: carrying out the action queued for this boot..." > /dev/console 2> /dev/null
    if unshare --mount /usr/sbin/ibi-assemble pending-inner > /dev/console 2>&1; then
        ibi_log notice "the queued action is done"
    else
        ibi_log err "the queued action failed (exit $?): it stays queued (ibi pending)"
    fi
    rmdir "$IBI_LOWER"/* 2> /dev/null
    return 0
}

# Renews the boot plan when it is missing or older than roottab (a power cut between the two
# commits, or roottab edited by hand), with the image's own ibi. A plan that stays stale is
# still used, loudly: its stacks name images that exist.
ensure_plan() {
    ibi_plan_current && return 0
    ibi_log warning "the boot plan is missing or older than roottab: renewing it"
    unshare --mount /usr/sbin/ibi-assemble plan-inner > /dev/console 2>&1
    rmdir "$IBI_LOWER"/* 2> /dev/null
    ibi_plan_current && return 0
    ibi_log err "the boot plan could not be renewed: booting from the plan as it is"
    return 0
}

# The stack on trial used up its boots: the good stack's own ibi makes it the active one
# again (roottab, its writable layer back), then the plan names it as the normal stack. If
# that fails, this boot runs the good stack on a RAM overlay (nothing it writes is kept),
# so a machine without a console never stays on the failed stack; the next boot tries again.
# returns: 0 when the plan's normal stack is now the good one; 1 (IBI_NAMES: the good stack)
fall_back() {
    _fb_good=$(ibi_plan_stacks good | head -n 1)
    ibi_log err "the stack on trial used up its boots without completing one: falling back to [$_fb_good]"
    echo "ibi: falling back to the last good stack [$_fb_good]..." > /dev/console 2> /dev/null
    unshare --mount /usr/sbin/ibi-assemble fallback-inner > /dev/console 2>&1
    _fb_rc=$?
    rmdir "$IBI_LOWER"/* 2> /dev/null
    if [ "$_fb_rc" -eq 0 ] && ibi_plan_current && [ -z "$(ibi_plan_tries)" ]; then
        ibi_log warning "back on the last good stack: $(ibi_plan_stacks normal | head -n 1) (ibi status says why)"
        return 0
    fi
    ibi_log err "the fallback could not be made durable (exit $_fb_rc): this boot runs [$_fb_good] on a RAM overlay"
    IBI_NAMES=$_fb_good
    return 1
}

# arg1: why the menu failed
# Says so on the console with the end of its error output, and offers a retry, a shell or
# to go on booting. returns: 0 to retry; 1 to go on (the decision is then "normal")
menu_failed() {
    _cr=$(printf '\r')
    while :; do
        # a menu that died hard may have left the terminal raw
        stty sane < /dev/console 2> /dev/null
        {
            echo
            echo "************************************************************"
            echo "ibi: Maintenance Mode failed: $1"
            if [ -s "$IBI_RUN/menu-stderr.log" ]; then
                tail -n 8 "$IBI_RUN/menu-stderr.log" | sed 's/^/    /'
            fi
            echo "logs: $IBI_RUN/menu-stderr.log, $IBI_RUN/menu.log, journalctl -b"
            echo "************************************************************"
            echo "  r  try the maintenance menu again"
            # dracut's rule for its own shells: rd.shell=0 offers none (the menu's Shell
            # asks for root's password; this one, without the image's Python, cannot)
            if getargbool 1 rd.shell; then
                echo "  s  emergency shell (type exit to come back here)"
                echo "  c  continue booting"
                printf "Choose r, s or c: "
            else
                echo "  c  continue booting"
                printf "Choose r or c: "
            fi
        } > /dev/console 2>&1
        if ! read -r _answer < /dev/console; then
            ibi_log err "cannot read the console: continuing to boot"
            _answer=c
        fi
        _answer=${_answer%"$_cr"}
        case $_answer in
            r* | R*) return 0 ;;
            s* | S*)
                getargbool 1 rd.shell || continue
                ibi_log notice "emergency shell from Maintenance Mode"
                PS1="ibi-initramfs# " sh -i < /dev/console > /dev/console 2>&1
                ;;
            c* | C*)
                ibi_log warning "Maintenance Mode failed ($1): continuing to boot as asked"
                echo normal > "$DECISION"
                return 1
                ;;
        esac
    done
}

# arg1: an error to show in the menu (may be empty)
# Runs the maintenance menu on the console and records its decision in $DECISION
# ("normal" when it ended without one). returns: 1 if the menu could not run at all
run_menu() {
    if [ ! -t 0 ]; then
        exec 0<> /dev/console 1>&0 2>&0
    fi
    case $(stty size 2> /dev/null) in
        "" | "0 "* | *" 0") stty rows 24 cols 80 2> /dev/null ;;
    esac
    # quiet the console while the menu (or its failure prompt) owns it: systemd's status
    # output off (SIGRTMIN+21), kernel messages down to emergencies
    kill -55 1 2> /dev/null
    read -r _printk _ < /proc/sys/kernel/printk
    echo 1 > /proc/sys/kernel/printk
    while :; do
        rm -f "$DECISION" "$IBI_RUN/menu-started" "$IBI_RUN/menu-stderr.log"
        unshare --mount /usr/sbin/ibi-assemble menu-inner "$1" 2> "$IBI_RUN/menu-stderr.log"
        _rc=$?
        printf '\033[0m\033[H\033[J' 2> /dev/null
        rmdir "$IBI_LOWER"/* 2> /dev/null
        [ -s "$DECISION" ] && break
        if [ -e "$IBI_RUN/menu-started" ]; then
            _why="the menu ended without a decision (exit $_rc)"
        else
            _why="the menu could not be started (exit $_rc)"
        fi
        ibi_log err "$_why"
        menu_failed "$_why" || break
    done
    echo "$_printk" > /proc/sys/kernel/printk
    kill -54 1 2> /dev/null
    ibi_log notice "menu decision: $(cat "$DECISION")"
    return 0
}

# The plan's normal stack (roottab), else its fallback (roottab.prev); sets IBI_ERROR on failure
assemble_normal() {
    if ! ibi_count_boot && ! fall_back; then
        if [ -n "$IBI_NAMES" ] && ibi_names_ok "$IBI_NAMES" \
            && ibi_assemble "$NEWROOT" "$IBI_NAMES" tmpfs; then
            echo "fallback-ram $IBI_NAMES" > "$MODE"
            return 0
        fi
        ibi_log err "the good stack cannot be assembled either ($IBI_ERROR): booting the stack on trial"
    fi
    if ibi_plan_stack normal && ibi_assemble "$NEWROOT" "$IBI_NAMES" layer; then
        echo "normal roottab" > "$MODE"
        ibi_log notice "booting the stack from roottab: $IBI_NAMES"
        return 0
    fi
    _first=$IBI_ERROR
    ibi_log warning "the stack of roottab cannot be used ($_first): falling back to roottab.prev"
    if ibi_plan_stack fallback && ibi_assemble "$NEWROOT" "$IBI_NAMES" layer; then
        echo "normal roottab.prev" > "$MODE"
        ibi_log warning "booting the PREVIOUS stack (roottab.prev): $IBI_NAMES"
        return 0
    fi
    IBI_ERROR="roottab: $_first; roottab.prev: $IBI_ERROR"
    return 1
}

# arg1: image name
assemble_review() {
    ibi_plan_stack review "$1" || return 1
    ibi_assemble "$NEWROOT" "$IBI_NAMES" tmpfs || return 1
    echo "review $1" > "$MODE"
    ibi_log notice "LIVE REVIEW of '$1' (changes are kept in RAM only): $IBI_NAMES"
    return 0
}

# arg1: decision ("normal", "review NAME", "reboot", "poweroff")
assemble_decision() {
    case $1 in
        normal | "") assemble_normal ;;
        "review "*)
            assemble_review "${1#review }" && return 0
            ibi_log warning "cannot review '${1#review }' ($IBI_ERROR): booting normally"
            assemble_normal
            ;;
        reboot | poweroff)
            ibi_log notice "menu decision: $1"
            sync
            umount "$IBI_DATA" 2> /dev/null
            # --force: no orderly stop of the initramfs units, straight to systemd-shutdown
            systemctl --force "$1"
            sleep 60
            return 1
            ;;
        *)
            ibi_log warning "unknown menu decision '$1': booting normally"
            assemble_normal
            ;;
    esac
}

do_sysroot() {
    mkdir -p "$IBI_RUN"
    if ismounted "$NEWROOT"; then
        ibi_log warning "$NEWROOT is already mounted; leaving it alone"
        return 0
    fi
    if ! ibi_mount_data; then
        ibi_fail_banner "$IBI_ERROR"
        return 1
    fi
    ensure_plan
    run_pending
    if [ -s "$DECISION" ]; then
        read -r _decision < "$DECISION"
    elif _review=$(getarg rd.ibi.review=) && [ -n "$_review" ]; then
        _decision="review $_review"
    else
        _decision=normal
    fi
    assemble_decision "$_decision" && return 0
    # the last resort before a shell: the menu, showing what went wrong
    _err=$IBI_ERROR
    ibi_fail_banner "$_err"
    run_menu "cannot boot: $_err"
    read -r _decision < "$DECISION"
    assemble_decision "$_decision" && return 0
    ibi_fail_banner "$IBI_ERROR"
    ibi_log err "giving up: an emergency shell follows (the data partition is on $IBI_DATA)"
    return 1
}

do_menu() {
    mkdir -p "$IBI_RUN"
    if ! ibi_mount_data; then
        ibi_fail_banner "$IBI_ERROR"
        return 1
    fi
    ensure_plan
    run_pending
    run_menu ""
}

case $1 in
    menu) do_menu ;;
    sysroot) do_sysroot ;;
    menu-inner) image_inner menu "$2" ;;
    pending-inner) image_inner pending "" ;;
    plan-inner) image_inner plan "" ;;
    fallback-inner) image_inner fallback "" ;;
    *)
        echo "usage: ibi-assemble menu|sysroot" >&2
        exit 2
        ;;
esac
