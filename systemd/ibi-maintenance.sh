#!/bin/sh
# ibi-maintenance: run the maintenance menu in the booted system (ibi-maintenance.service)
# and act on its decision: "normal" goes back to the default target; "review NAME" reboots
# into that restore point's Live Review through GRUB's one-time entry (the menu ibi install
# put on the data partition reads DATA/boot/grub/grubenv) when it can; "reboot" (the menu
# may have set that one-time entry itself) and "poweroff" do so.

DATA=/run/ibi/data
DECISION=/run/ibi/decision

case $(stty size 2> /dev/null) in
    "" | "0 "* | *" 0") stty rows 24 cols 80 2> /dev/null ;;
esac
rm -f "$DECISION"
ibi-menu --data "$DATA"
rc=$?
decision=normal
[ -s "$DECISION" ] && read -r decision < "$DECISION"
[ "$rc" -eq 0 ] || [ -s "$DECISION" ] ||
    echo "ibi: the menu ended without a decision (exit $rc): back to the normal system"

case $decision in
    "review "*)
        name=${decision#review }
        env=$DATA/boot/grub/grubenv
        if [ -f "$env" ] && command -v grub-editenv > /dev/null &&
            grep -q -- "--id ibi-review-$name " "$DATA/boot/grub/grub.cfg" 2> /dev/null &&
            grub-editenv "$env" set "next_entry=ibi-review-$name"; then
            echo "ibi: rebooting into the Live Review of $name"
            exec systemctl reboot
        fi
        echo "ibi: a Live Review boots from the boot menu: reboot and choose"
        echo "ibi: 'ibi Live Review of $name' (or add rd.ibi.review=$name to the kernel command line)"
        sleep 5
        ;;
    reboot) exec systemctl reboot ;;
    poweroff) exec systemctl poweroff ;;
esac
exec systemctl --no-block isolate default.target
