#!/bin/sh
# ibi-maintenance: run the maintenance menu in the booted system (ibi-maintenance.service)
# and act on its decision: "normal" goes back to the default target; "review NAME" reboots
# into that restore point's Live Review through GRUB's one-time entry when it can.

DATA=/run/ibi/data
DECISION=/run/ibi/decision

case $(stty size 2> /dev/null) in
    "" | "0 "* | *" 0") stty rows 24 cols 80 2> /dev/null ;;
esac
rm -f "$DECISION"
/usr/sbin/ibi menu --data "$DATA"
rc=$?
decision=normal
[ -s "$DECISION" ] && read -r decision < "$DECISION"
[ "$rc" -eq 0 ] || [ -s "$DECISION" ] ||
    echo "ibi: the menu ended without a decision (exit $rc): back to the normal system"

case $decision in
    "review "*)
        name=${decision#review }
        entry="ibi: Live Review of $name"
        if command -v grub-reboot > /dev/null &&
            grub_entry=$(grep -o "menuentry '${entry}[^']*'" /boot/grub/grub.cfg 2> /dev/null |
                head -n 1 | cut -d"'" -f2) && [ -n "$grub_entry" ]; then
            echo "ibi: rebooting into: $grub_entry"
            grub-reboot "$grub_entry" && exec systemctl reboot
        fi
        echo "ibi: a Live Review boots from the boot menu: reboot and choose '$entry'."
        echo "ibi: (or add rd.ibi.review=$name to the kernel command line)"
        sleep 5
        ;;
esac
exec systemctl --no-block isolate default.target
