#!/bin/bash
# Stage 2 of the test guest (tests/vm/run-cgroup2): PID 1 after the initramfs switch_roots into
# the host's root (read-only 9p). Reads its job from the share (/run/vm/share: the integration
# binary, rsandbox, args, env.sh) and writes facts.log, root.log, root.status, user.log,
# user.status and done there, then powers off. Output also goes to the console (the host's stdout).

S=/run/vm/share
BB=/run/vm/bin/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8 HOME=/root
cd /

finish() {
    sync
    $BB poweroff -f
    sleep 10
}
trap finish EXIT
die() {
    echo "vm-guest: FAILED: $*" | tee -a "$S/facts.log"
    exit 1
}
t() { $BB awk '{printf "%.1f", $1}' /proc/uptime; }
T_START=$(t)
# For the host: the kernel came up and this script runs (a boot that dies before this is
# retried; one that gets here never is).
: >"$S/started"

# shellcheck source=/dev/null
. "$S/env.sh" || die "reading env.sh"
mapfile -t ARGS <"$S/args"
read -ra EXTRA_ENV <<<"${VM_TEST_ENV:-}"

# --- the guest's own mounts (the root is the host's, read-only) -------------------------------
# The tests read files of the checkout (CARGO_MANIFEST_DIR: tests/fake-gpus, systemd/). A
# checkout under a directory that gets a tmpfs below (e.g. a clone in /tmp) is kept visible at
# its own path: held on /run while the tmpfs goes on, then moved back into place.
case "$VM_REPO" in
/tmp/* | /home/* | /var/lib/rsandbox/*) KEEP_REPO=1 ;;
*) KEEP_REPO= ;;
esac
if [ -n "$KEEP_REPO" ]; then
    mkdir -p /run/vm/repo && mount --bind "$VM_REPO" /run/vm/repo || die "holding $VM_REPO"
fi
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp || die "tmpfs /tmp"
# What udev/systemd add to devtmpfs and /sys on a usual distribution.
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
ln -s /proc/kcore /dev/core
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf -o mode=700 bpf /sys/fs/bpf
# As on systemd distributions: nsdelegate, memory_recursiveprot.
mount -t cgroup2 -o nsdelegate,memory_recursiveprot,nosuid,nodev,noexec cgroup2 /sys/fs/cgroup || die "mounting cgroup2"
# rsandbox's state (/run/rsandbox) is on the /run tmpfs already; its template needs a writable
# /var/lib/rsandbox (the host script makes sure the directory exists on the host).
mount -t tmpfs -o mode=755 tmpfs /var/lib/rsandbox || die "tmpfs /var/lib/rsandbox"
# Home directories on a tmpfs: the host's are read-only here and none of the guest's business.
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /home || die "tmpfs /home"
if [ -n "$KEEP_REPO" ]; then
    mkdir -p "$VM_REPO" && mount --move /run/vm/repo "$VM_REPO" || die "putting back $VM_REPO"
fi
hostname rsandbox-vm
# The loopback interface, up as on any booted system (daemon and network tests listen on it).
$BB ip link set lo up || die "bringing up lo"

# --- the unprivileged user ------------------------------------------------------------------
# Name $VM_USER (rstest). If the host's /etc/passwd has no such user, the guest gets copies of
# passwd and group with it added, bound over the read-only originals (uid/gid: the first free id
# from 2000). Its home is on the /home tmpfs. A dedicated uid rather than nobody/65534: 65534 is
# also the overflow id that unmapped ids show as inside user namespaces, which would blur tests.
if ! getent passwd "$VM_USER" >/dev/null; then
    mkdir -p /run/vm/etc
    cp /etc/passwd /etc/group /run/vm/etc/
    id=2000
    while getent passwd $id >/dev/null || getent group $id >/dev/null; do id=$((id + 1)); done
    echo "$VM_USER:x:$id:$id::/home/$VM_USER:/bin/sh" >>/run/vm/etc/passwd
    echo "$VM_USER:x:$id:" >>/run/vm/etc/group
    mount --bind /run/vm/etc/passwd /etc/passwd
    mount --bind /run/vm/etc/group /etc/group
fi
uid=$(id -u "$VM_USER") gid=$(id -g "$VM_USER")
home=/home/$VM_USER
mkdir -p "$home" && chown "$uid:$gid" "$home"

# --- the delegated cgroup subtree ------------------------------------------------------------
# Like systemd's Delegate=yes: the controllers are enabled in the root's subtree_control, so
# they are available in $CG; $CG's own subtree_control stays empty and the user's shell is
# moved into $CG itself. To enable controllers below it, the user must first move its processes
# into a child (no internal processes in a non-root cgroup with controllers enabled).
CG=/sys/fs/cgroup/$VM_USER
echo "+cpu +cpuset +io +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control || die "enabling controllers"
mkdir "$CG" || die "mkdir $CG"
chown "$uid:$gid" "$CG" "$CG/cgroup.procs" "$CG/cgroup.subtree_control" "$CG/cgroup.threads" || die "chown $CG"

# --- fake GPU nodes for the unprivileged pass (mknod needs root; the root pass makes its own) ----
# On the guest's one filesystem without nodev: the /var/lib/rsandbox tmpfs.
GPU_DEV=/var/lib/rsandbox/fake-gpus/dev
sh "$S/fake-gpus" "$GPU_DEV" || die "making fake GPU nodes"
chmod 755 /var/lib/rsandbox/fake-gpus

# --- facts ------------------------------------------------------------------------------------
as_user() { setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"; }
{
    echo "=== guest facts (guest.sh started at uptime ${T_START}s)"
    echo "kernel: $(uname -r)"
    echo "cgroup mounts: $(awk '$9 ~ /^cgroup/ {print $5, $9, $NF}' /proc/self/mountinfo | tr '\n' ';')"
    echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
    echo "root cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
    echo "$CG/cgroup.controllers: $(cat "$CG/cgroup.controllers")"
    echo "/proc/self/cgroup: $(tr '\n' ' ' </proc/self/cgroup)"
    echo "lsm: $(cat /sys/kernel/security/lsm 2>/dev/null || echo '?')"
    /usr/bin/python3 "$S/landlock-check.py" 2>&1
    echo "user: $VM_USER uid=$uid gid=$gid home=$home"
    if as_user unshare -U true 2>&1; then
        echo "unshare -U true as $VM_USER: works"
    else
        echo "unshare -U true as $VM_USER: FAILS"
    fi
    echo "cpus: $(nproc), memory: $(awk '/MemTotal/ {print $2, $3}' /proc/meminfo)"
} 2>&1 | tee -a "$S/facts.log"

# --- the passes -------------------------------------------------------------------------------
threads=(--test-threads=2)
for a in "${ARGS[@]}"; do
    case "$a" in --test-threads*) threads=() ;; esac
done

# When a pass is still running after $VM_PASS_TIMEOUT seconds: what every process is doing (ps, and
# the kernel stack of every thread of every user-space process), to NAME.stuck.log and the
# console; then the test process's process group is killed and the next pass runs. (The test
# process leads its own session, through setsid, so that the group is exactly what it started.)
stuck() { # TESTPID NAME (builtins where it loops: forks are slow under TCG)
    local p task l
    echo "=== pass $2: still running after ${VM_PASS_TIMEOUT}s; processes:"
    ps -eo pid,ppid,user,stat,wchan:28,etime,args --forest | grep -v ' \[.*\]$'
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" != 1 ] && [ -e "/proc/$p/exe" ] || continue # not PID 1, not kernel threads
        for task in /proc/"$p"/task/*; do
            read -r l <"$task/comm"
            echo "--- pid $p task ${task##*/} ($l)"
            while IFS= read -r l; do echo "    $l"; done <"$task/stack"
        done 2>/dev/null
    done
    echo "=== pass $2: killing the test process's process group (SIGKILL)"
    touch "$S/$2.killed"
    kill -KILL -- "-$1"
}

run_pass() { # NAME EXPECT: runs the integration binary; output to NAME.log and the console
    local name=$1 t0 rc wd
    t0=$(t)
    echo "=== pass $name: RSANDBOX_TEST_EXPECT=$2 (uptime ${t0}s)"
    rm -f /run/vm/stuck
    (
        sleep "$VM_PASS_TIMEOUT" &
        wait $!
        touch /run/vm/stuck
        stuck "$(cat /run/vm/testpid)" "$name" 2>&1 | tee "$S/$name.stuck.log"
    ) &
    wd=$!
    (
        echo $BASHPID >/run/vm/testpid
        if [ "$name" = user ]; then
            # As a user with a delegated subtree does: the tests run in a leaf of it, and
            # RSANDBOX_CGROUP names the delegated cgroup, where rsandbox enables controllers.
            as_user mkdir "$CG/tests" || exit 125
            echo $BASHPID >"$CG/tests/cgroup.procs" || exit 125
            cd "$home" || exit 125
            echo "/proc/self/cgroup: $(tr '\n' ' ' </proc/self/cgroup)"
            exec setsid setpriv --reuid="$uid" --regid="$gid" --clear-groups -- \
                env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" USER="$VM_USER" LANG=C.UTF-8 \
                RSANDBOX_BIN="$S/rsandbox" RSANDBOX_TEST_EXPECT="$2" RSANDBOX_CGROUP="$CG" \
                RSANDBOX_TEST_GPU_DEV_DIR="$GPU_DEV" \
                RSANDBOX_TEST_TIME_SCALE="$TIME_SCALE" "${EXTRA_ENV[@]}" \
                "$S/integration" "${threads[@]}" "${ARGS[@]}"
        fi
        echo "/proc/self/cgroup: $(tr '\n' ' ' </proc/self/cgroup)"
        exec setsid env -i PATH="$PATH" HOME=/root USER=root LANG=C.UTF-8 \
            RSANDBOX_BIN="$S/rsandbox" RSANDBOX_TEST_EXPECT="$2" \
            RSANDBOX_TEST_TIME_SCALE="$TIME_SCALE" "${EXTRA_ENV[@]}" \
            "$S/integration" "${threads[@]}" "${ARGS[@]}"
    ) </dev/null 2>&1 | tee "$S/$name.log"
    rc=${PIPESTATUS[0]}
    [ -e /run/vm/stuck ] || kill "$wd" 2>/dev/null # else let it finish its report
    wait "$wd" 2>/dev/null
    echo "$rc" >"$S/$name.status"
    echo "=== pass $name: exit status $rc, $(awk -v a="$t0" -v b="$(t)" 'BEGIN {printf "%.1f", b - a}')s"
}

for pass in $VM_PASSES; do
    case "$pass" in
        root) run_pass root "$VM_EXPECT_ROOT" ;;
        user) run_pass user "$VM_EXPECT_USER" ;;
    esac
done
t >"$S/done"
