#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# Boots OpenRC for the packaging test, as PID 1 of fresh namespaces. openrc.test.ts
# starts it as `unshare --net --pid --mount --fork openrc-ns.sh BASE WORK AGENT [SERVICES]`:
#  - the network namespace is new and empty, so nothing the agent does to iptables
#    reaches this machine's own;
#  - the mount namespace is private: the overlay and /proc, /dev, /run, /tmp below
#    exist only in it and go away with it;
#  - in the new pid namespace this script is PID 1 and ends by exec'ing OpenRC's own
#    init, /sbin/openrc-init, chrooted into the overlay. So OpenRC boots for real
#    (sysinit, boot, default runlevels), reaps orphans as an init must (supervise-
#    daemon's stop waits for its pid to vanish), and `openrc-shutdown --poweroff now`
#    ends it: the kernel turns a poweroff in a child pid namespace into the end of
#    that namespace's init, and with it the namespaces.
# BASE is the cached root from scripts/openrc-rootfs (never written: it is the
# overlay's lower layer); WORK a fresh directory for the upper layer; AGENT what
# `scripts/openrc-rootfs install-agent` takes. SERVICES: the default runlevel (default
# "imds-guard docker"). A WORK booted before is booted again with what its last boot left
# (say the boot script the agent wrote). Prints "ready HOSTPID" before the exec:
# HOSTPID is the pid to nsenter, and to kill if anything goes wrong.
set -eu
base=$1 work=$2 agent=$3 services=${4:-imds-guard docker}
root=$work/root
# shellcheck source=ns-lib.sh
. "$(dirname "$0")/ns-lib.sh"

overlay_root "$base" "$work" "$agent"
# The root as an Alpine/Moby host would have it: our service and its conf.d, and a
# stand-in docker service that records what it found when it was started.
install -m 0755 "$repo/openrc/imds-guard" "$root/etc/init.d/imds-guard"
mkdir -p "$root/etc/conf.d" "$root/etc/local.d"
install -m 0644 "$repo/openrc/imds-guard.confd" "$root/etc/conf.d/imds-guard"
install -m 0755 "$repo/test/packaging/fixtures/docker.initd" "$root/etc/init.d/docker"
# Debian's openrc has no `local` service (Alpine's has): a fixture with its contract.
[ -e "$root/etc/init.d/local" ] || install -m 0755 "$repo/test/packaging/fixtures/local.initd" "$root/etc/init.d/local"
# Debian's default runlevels hold services for real hardware (hwclock.sh would set
# this machine's clock): boot only what the test is about.
rm -f "$root"/etc/runlevels/*/*
for svc in $services; do
	ln -s "/etc/init.d/$svc" "$root/etc/runlevels/default/$svc"
done
mount_api_filesystems "$root"

ready
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb /sbin/openrc-init
