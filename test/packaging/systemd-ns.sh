#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# Boots systemd for the packaging test, as PID 1 of throwaway namespaces: run by
# systemd.test.ts as `unshare --cgroup --net --pid --mount --uts --ipc --fork
# systemd-ns.sh BASE WORK AGENT` from inside an empty cgroup of this machine's cgroup2
# tree (the new cgroup namespace makes it systemd's root).
#  - network namespace: new and empty, nothing reaches this machine's iptables;
#  - mount namespace: private; the overlay of BASE (never written) becomes the root
#    by pivot_root, so the host's file systems are out of reach (systemd's own
#    sandboxing needs a real root, not a chroot);
#  - uts namespace: systemd sets the hostname at boot;
#  - /proc/sys and /sys are read-only, as container managers give them: systemd
#    then skips what would change this machine's kernel settings (systemd-sysctl,
#    udev, binfmt), and `container=` tells it it is in a container.
# `systemctl poweroff` inside ends it: the kernel turns a poweroff in a child pid
# namespace into the end of its init. Prints "ready HOSTPID" before the exec.
set -eu
base=$1 work=$2 agent=$3
root=$work/root
# shellcheck source=ns-lib.sh
. "$(dirname "$0")/ns-lib.sh"

overlay_root "$base" "$work" "$agent"
install -m 0644 "$repo/systemd/imds-guard.service" "$root/etc/systemd/system/imds-guard.service"
install -m 0644 "$repo/test/packaging/fixtures/docker.service" "$root/etc/systemd/system/docker.service"
install -m 0644 "$repo/test/packaging/fixtures/fake-docker-api.mjs" "$root/usr/local/lib/fake-docker-api.mjs"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/local.d"
for unit in imds-guard docker; do
	ln -s "/etc/systemd/system/$unit.service" "$root/etc/systemd/system/multi-user.target.wants/$unit.service"
done
# Nothing of systemd's own that tries the console, a getty or the machine's clock.
for unit in getty.target console-getty.service systemd-timesyncd.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
mount_api_filesystems "$root"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"

# Before pivot_root: only this machine's /proc tells the pid it knows us by.
ready
# The overlay is a mount point, as pivot_root wants.
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
exec /usr/bin/env -i container=imds-guard-test PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --log-target=journal
