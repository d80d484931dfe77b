#!/bin/sh
# ibi-protect: boot-time protection check of the booted system (ibi-protect.service).
# Warns on the console and in the journal when / is not ibi's overlay, when an image below it
# is writable, or when the overlay runs with options that would make the writable layer
# unsquashable. Exit status 1 when something is wrong (the unit then shows as failed).

problems=0
# other files in tests (tests/test_protect.py)
MOUNTINFO=${IBI_MOUNTINFO:-/proc/self/mountinfo}
MODE_FILE=${IBI_MODE_FILE:-/run/ibi/mode}
CONSOLE=${IBI_CONSOLE:-/dev/console}
KMSG=${IBI_KMSG:-/dev/kmsg}

# arg1: message
warn() {
    problems=$((problems + 1))
    echo "ibi: WARNING: $*" >> "$CONSOLE" 2> /dev/null
    echo "<4>ibi: WARNING: $*" >> "$KMSG" 2> /dev/null
    echo "ibi: WARNING: $*"
}


# arg1: path; prints: "<fstype> <mount options>,<super options>" of the mount on exactly
# that path (the last one mounted there)
mount_of() {
    _found=
    while read -r _id _parent _dev _root _mp _opts _rest; do
        [ "$_mp" = "$1" ] || continue
        _super=${_rest#*- }
        # "<fstype> <source> <super options>": the options are the last field
        _found="${_super%% *} $_opts,${_super##* }"
    done < "$MOUNTINFO"
    [ -n "$_found" ] && echo "$_found"
}

mode=unknown
[ -r "$MODE_FILE" ] && read -r mode < "$MODE_FILE"

root=$(mount_of /)
fstype=${root%% *}
opts=${root#* }
if [ "$fstype" != overlay ]; then
    warn "/ is '${fstype:-not mounted}', not ibi's overlay: this system is NOT protected by ibi"
    exit 1
fi
case ,$opts, in
    *,ro,*) warn "/ is mounted read-only" ;;
esac
for bad in redirect_dir=on redirect_dir=follow metacopy=on index=on xino=on; do
    case ,$opts, in
        *,"$bad",*) warn "/ uses $bad: the writable layer could not be squashed safely" ;;
    esac
done

# The images: one lowerdir=A:B:C list, or (a stack past 88 images) one lowerdir+=N option
# per image; ibi gives them relative to /run/ibi/lower. The options are split on commas and
# mountinfo is read once, whatever the depth (a search per image in long strings was
# quadratic: a minute and more for 101 images under emulation).
lowers=
upper=
old_ifs=$IFS
IFS=,
for opt in $opts; do
    case $opt in
        lowerdir=*) lowers=${opt#lowerdir=} ;;
        lowerdir+=*) lowers=${lowers:+$lowers:}${opt#lowerdir+=} ;;
        upperdir=*) upper=${opt#upperdir=} ;;
    esac
done
IFS=:
want=" "
n=0
for lower in $lowers; do
    n=$((n + 1))
    case $lower in
        /*) ;;
        *) lower=/run/ibi/lower/$lower ;;
    esac
    want="$want$lower "
done
IFS=$old_ifs
if [ -z "$lowers" ]; then
    warn "cannot find the images below / (no lowerdir in the mount options)"
else
    seen=" "
    while read -r _id _parent _dev _root _mp _opts _rest; do
        case $want in
            *" $_mp "*) ;;
            *) continue ;;
        esac
        _super=${_rest#*- }
        case ,$_opts,${_super##* }, in
            *,ro,*) ;;
            *) warn "image $_mp is WRITABLE: it must be mounted read-only" ;;
        esac
        [ "${_super%% *}" = squashfs ] || warn "image $_mp is not squashfs"
        seen="$seen$_mp "
    done < "$MOUNTINFO"
    for lower in $want; do
        case $seen in
            *" $lower "*) ;;
            *) warn "image $lower is not a mount of its own" ;;
        esac
    done
fi

case $mode in
    review*)
        echo "ibi: LIVE REVIEW (${mode#review }): changes live in RAM and are lost at shutdown" \
            >> "$CONSOLE" 2> /dev/null
        ;;
    normal*)
        case $upper in
            /run/ibi/data/layer/upper) ;;
            *) warn "the writable layer is $upper, not /run/ibi/data/layer/upper" ;;
        esac
        if [ "$mode" = "normal roottab.prev" ]; then
            # not a breach of protection, but the person must know
            echo "ibi: NOTE: booted the PREVIOUS stack (roottab.prev): roottab was unusable" |
                tee -a "$CONSOLE"
        fi
        ;;
    *) warn "no ibi boot mode recorded (/run/ibi/mode missing)" ;;
esac

if [ "$problems" -eq 0 ]; then
    echo "ibi: protection check passed ($mode; $n image(s) read-only below /)"
    exit 0
fi
exit 1
