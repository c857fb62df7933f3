#!/bin/sh
# Boots OpenRC for the packaging test, as PID 1 of fresh namespaces. openrc.test.ts
# starts it as `unshare --net --pid --mount --fork openrc-ns.sh BASE WORK AGENT`:
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
# `scripts/openrc-rootfs install-agent` takes. Prints "ready HOSTPID" before the exec:
# HOSTPID is the pid to nsenter, and to kill if anything goes wrong.
set -eu
base=$1 work=$2 agent=$3
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=$work/root

mkdir -p "$work/upper" "$work/overlay-work" "$root"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/overlay-work" "$root"

# The root as an Alpine/Moby host would have it: the agent, our service and its
# conf.d, and a stand-in docker service that records what it found when started.
"$repo/scripts/openrc-rootfs" install-agent "$root" "$agent"
install -m 0755 "$repo/openrc/imds-guard" "$root/etc/init.d/imds-guard"
mkdir -p "$root/etc/conf.d" "$root/etc/local.d" "$root/etc/imds-guard"
install -m 0644 "$repo/openrc/imds-guard.confd" "$root/etc/conf.d/imds-guard"
install -m 0755 "$repo/test/packaging/fixtures/docker.initd" "$root/etc/init.d/docker"
if [ -d "$agent" ]; then
	# The real agent: no Docker daemon runs here, so it protects the default
	# interface names (docker0, docker_gwbridge, br-+) without asking for bridges.
	printf 'docker: false\n' >"$root/etc/imds-guard/config.yaml"
fi
# Debian's default runlevels hold services for real hardware (hwclock.sh would set
# this machine's clock): boot only what the test is about.
rm -f "$root"/etc/runlevels/*/*
for svc in imds-guard docker local; do
	ln -s "/etc/init.d/$svc" "$root/etc/runlevels/default/$svc"
done

mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o mode=0755,nosuid dev "$root/dev"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
	IFS=: read -r name major minor <<-X
	$d
	X
	mknod -m 0666 "$root/dev/$name" c "$major" "$minor"
done
ln -s /proc/self/fd "$root/dev/fd"
mount -t tmpfs -o mode=0755,nosuid,nodev run "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$root/tmp"
ip link set lo up

# /proc here is still this machine's: /proc/self names this shell by its pid there.
read -r hostpid _ </proc/self/stat
echo "ready $hostpid"
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb /sbin/openrc-init
