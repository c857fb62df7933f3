# shellcheck shell=sh
# Shared by openrc-ns.sh and systemd-ns.sh, which run as PID 1 of throwaway pid,
# mount and network namespaces and boot an init system in a root built by
# scripts/openrc-rootfs. Everything mounted here lives only in that mount namespace.

# The checkout; $0 is the script that sources this file, beside it.
repo=$(cd "$(dirname "$0")/../.." && pwd)

# overlay_root BASE WORK AGENT: mounts a writable overlay of BASE (never written) at
# WORK/root and installs AGENT into it.
overlay_root() {
	mkdir -p "$2/upper" "$2/overlay-work" "$2/root"
	mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/overlay-work" "$2/root"
	"$repo/scripts/openrc-rootfs" install-agent "$2/root" "$3"
	mkdir -p "$2/root/etc/imds-guard"
	# No Docker daemon runs here: the agent installs its catch-all and backstop
	# without asking Docker (they cover every container whatever its network).
	printf 'docker: false\n' >"$2/root/etc/imds-guard/config.yaml"
}

# mount_api_filesystems ROOT: /proc, a minimal /dev (the usual character devices,
# ptys and shm, none of the host's disks or consoles), /run and /tmp.
mount_api_filesystems() {
	mount -t proc -o nosuid,nodev,noexec proc "$1/proc"
	mount -t tmpfs -o mode=0755,nosuid dev "$1/dev"
	for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
		IFS=: read -r name major minor <<-X
		$d
		X
		mknod -m 0666 "$1/dev/$name" c "$major" "$minor"
	done
	ln -s /proc/self/fd "$1/dev/fd"
	mkdir -p "$1/dev/pts" "$1/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$1/dev/pts"
	ln -s pts/ptmx "$1/dev/ptmx"
	mount -t tmpfs -o mode=1777,nosuid,nodev shm "$1/dev/shm"
	mount -t tmpfs -o mode=0755,nosuid,nodev run "$1/run"
	mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$1/tmp"
	ip link set lo up
}

# ready: tells the test which pid to nsenter (and to kill if anything goes wrong).
# Call it while /proc is still this machine's (before chroot or pivot_root): then
# /proc/self names this shell by its pid there, not by 1.
ready() {
	read -r hostpid _ </proc/self/stat
	echo "ready $hostpid"
}
