#!/bin/sh
# ibi-health: the health checks of a boot (ibi-health.service, before boot-complete.target).
# Runs every executable file in /usr/lib/ibi/health.d and /etc/ibi/health.d (a name in
# /etc replaces the same name in /usr/lib; an empty or non-executable file there disables
# it), in name order, each with a time limit; and, when systemd-boot-check-no-failures.service
# is enabled, requires that it did not fail. Any failure fails this unit: boot-complete.target
# is then not reached, the stack is not marked good, and ibi-boot-failed.service records it
# (a stack on trial is rebooted: docs/FORMAT.md, "Updates").
# Exit status: 0 all checks passed; 1 one failed (its name and output are in the journal).

LIMIT=${IBI_HEALTH_TIMEOUT:-300}
failed=
names=$(for d in /usr/lib/ibi/health.d /etc/ibi/health.d; do
    [ -d "$d" ] && ls -1 "$d"
done | sort -u)
for name in $names; do
    check=/etc/ibi/health.d/$name
    [ -e "$check" ] || check=/usr/lib/ibi/health.d/$name
    if [ ! -f "$check" ] || [ ! -x "$check" ] || [ ! -s "$check" ]; then
        echo "ibi-health: $name: skipped (not an executable file)"
        continue
    fi
    if out=$(timeout "$LIMIT" "$check" 2>&1); then
        echo "ibi-health: $name: ok"
    else
        rc=$?
        [ "$rc" -eq 124 ] && why="no answer in $LIMIT s" || why="exit $rc"
        printf 'ibi-health: %s: FAILED (%s)\n' "$name" "$why"
        [ -n "$out" ] && printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
        failed="${failed:+$failed, }$name ($why)"
    fi
done
if systemctl -q is-enabled systemd-boot-check-no-failures.service 2> /dev/null &&
    systemctl -q is-failed systemd-boot-check-no-failures.service; then
    failed="${failed:+$failed, }systemd-boot-check-no-failures (units failed: $(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' '))"
fi
if [ -n "$failed" ]; then
    echo "ibi-health: the boot failed its health checks: $failed"
    mkdir -p /run/ibi 2> /dev/null && printf '%s\n' "$failed" > /run/ibi/health-failed
    exit 1
fi
echo "ibi-health: every health check passed"
exit 0
