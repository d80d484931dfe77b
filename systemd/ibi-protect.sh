#!/bin/sh
# ibi-protect: boot-time protection check of the booted system (ibi-protect.service).
# Warns on the console and in the journal when / is not ibi's overlay, when an image below it
# is writable, or when the overlay runs with options that would make the writable layer
# unsquashable. Exit status 1 when something is wrong (the unit then shows as failed).

problems=0

# arg1: message
warn() {
    problems=$((problems + 1))
    echo "ibi: WARNING: $*" > /dev/console 2> /dev/null
    echo "<4>ibi: WARNING: $*" > /dev/kmsg 2> /dev/null
    echo "ibi: WARNING: $*"
}

# arg1: path; prints: "<mount options>,<super options>" of the mount on exactly that path
mount_opts() {
    while read -r _id _parent _dev _root _mp _opts _rest; do
        if [ "$_mp" = "$1" ]; then
            _super=${_rest#* - }
            # "<fstype> <source> <super options>": the options are the last field
            echo "$_opts,${_super##* }"
            return 0
        fi
    done < /proc/self/mountinfo
    return 1
}

# arg1: path; prints: the fstype of the mount at exactly that path
mount_type() {
    while read -r _id _parent _dev _root _mp _opts _rest; do
        if [ "$_mp" = "$1" ]; then
            _super=${_rest#* - }
            echo "${_super%% *}"
            return 0
        fi
    done < /proc/self/mountinfo
    return 1
}

mode=unknown
[ -r /run/ibi/mode ] && read -r mode < /run/ibi/mode

fstype=$(mount_type /)
if [ "$fstype" != overlay ]; then
    warn "/ is '$fstype', not ibi's overlay: this system is NOT protected by ibi"
    exit 1
fi
opts=$(mount_opts /)
case ,$opts, in
    *,ro,*) warn "/ is mounted read-only" ;;
esac
for bad in redirect_dir=on redirect_dir=follow metacopy=on index=on xino=on; do
    case ,$opts, in
        *,"$bad",*) warn "/ uses $bad: the writable layer could not be squashed safely" ;;
    esac
done

# one lowerdir=A:B:C list, or (a stack past 88 images) one lowerdir+=N option per image
lowers=
case ,$opts, in
    *,lowerdir=*)
        lowers=${opts#*lowerdir=}
        lowers=${lowers%%,*}
        ;;
    *,lowerdir+=*)
        rest=,$opts
        while :; do
            case $rest in
                *,lowerdir+=*) ;;
                *) break ;;
            esac
            rest=${rest#*,lowerdir+=}
            lowers=${lowers:+$lowers:}${rest%%,*}
        done
        ;;
esac
if [ -z "$lowers" ]; then
    warn "cannot find the images below / (no lowerdir in the mount options)"
else
    n=0
    old_ifs=$IFS
    IFS=:
    for lower in $lowers; do
        IFS=$old_ifs
        n=$((n + 1))
        case $lower in
            /*) ;;
            *) lower=/run/ibi/lower/$lower ;; # ibi gives lowers relative to /run/ibi/lower
        esac
        lopts=$(mount_opts "$lower") || {
            warn "image $lower is not a mount of its own"
            continue
        }
        case ,$lopts, in
            *,ro,*) ;;
            *) warn "image $lower is WRITABLE: it must be mounted read-only" ;;
        esac
        [ "$(mount_type "$lower")" = squashfs ] || warn "image $lower is not squashfs"
    done
    IFS=$old_ifs
fi

upper=${opts#*upperdir=}
upper=${upper%%,*}
case $mode in
    review*)
        echo "ibi: LIVE REVIEW (${mode#review }): changes live in RAM and are lost at shutdown" \
            > /dev/console 2> /dev/null
        ;;
    normal*)
        case $upper in
            /run/ibi/data/layer/upper) ;;
            *) warn "the writable layer is $upper, not /run/ibi/data/layer/upper" ;;
        esac
        if [ "$mode" = "normal roottab.prev" ]; then
            # not a breach of protection, but the person must know
            echo "ibi: NOTE: booted the PREVIOUS stack (roottab.prev): roottab was unusable" |
                tee /dev/console
        fi
        ;;
    *) warn "no ibi boot mode recorded (/run/ibi/mode missing)" ;;
esac

if [ "$problems" -eq 0 ]; then
    echo "ibi: protection check passed ($mode; $n image(s) read-only below /)"
    exit 0
fi
exit 1
