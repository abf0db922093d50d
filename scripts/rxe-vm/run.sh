#!/bin/bash
# scripts/rxe-vm/run.sh DIR CMD... — boots a throw-away qemu VM with Soft-RoCE (rxe0 on
# dummy0, 192.0.2.1) and runs CMD as root with cwd DIR; DIR is the only host path the VM can
# write. CMD's output comes out on stdout; the exit code is CMD's, 77 when the VM cannot be
# built here, 124 on timeout (IH_RXE_TIMEOUT, default 600 s), 125 for a VM failure (also a VM
# that did not boot twice: see the boot watchdog below).
# Inside, RXE_VM_IP=192.0.2.1 (ranks reach each other and the store there) and
# IH_TEST_RDMA_ADDR=192.0.2.1. The VM runs under TCG where /dev/kvm cannot boot a stock
# kernel (nested PVM): integer code runs near native speed, float code ~70x slower.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
(($# >= 2)) || { sed -n '2,9p' "$0" >&2; exit 2; }
DIR=$(cd "$1" && pwd -P) || exit 2
shift
CACHE=${IH_RXE_CACHE:-/tmp/ih-rxe-vm}
export IH_RXE_CACHE=$CACHE
[[ $(id -u) == 0 ]] || { echo "SKIP: the Soft-RoCE VM needs root (9p share of /)" >&2; exit 77; }
mkdir -p "$CACHE"
flock "$CACHE/.lock" "$HERE/build.sh"
rc=$?
((rc == 0)) || exit "$rc"
if [[ -w /dev/kvm && ! -d /sys/module/kvm_pvm ]]; then ACC=(-accel kvm -cpu host); else ACC=(-accel tcg,thread=multi -cpu max); fi
CTL=$(mktemp -d /tmp/ih-rxe-ctl.XXXXXX)
trap 'rm -rf "$CTL"' EXIT
printf 'IH_DIR=%q\n' "$DIR" > "$CTL/config.sh"
{
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8'
    echo 'export RXE_VM_IP=192.0.2.1 IH_TEST_RDMA_ADDR=192.0.2.1'
    for v in ${IH_RXE_ENV:-}; do [[ -n ${!v+x} ]] && printf 'export %s=%q\n' "$v" "${!v}"; done
    echo 'ulimit -l unlimited'
    printf 'cd %q || exit 125\nexec' "$DIR"; printf ' %q' "$@"; echo
} > "$CTL/cmd.sh"
QPID=
trap '[[ -n $QPID ]] && kill "$QPID" 2>/dev/null; rm -rf "$CTL"; exit 130' INT TERM HUP
# Boot watchdog: under TCG on a loaded host the VM has been seen to hang before its init ran
# (nothing after SeaBIOS' "Booting from ROM"). init.sh writes $CTL/booted as soon as the
# kernel, its modules and the control share are up (normally within seconds); without it
# after IH_RXE_BOOT_TIMEOUT s (default 120) the VM is killed and booted again, once. A VM
# that never boots is an infrastructure failure (125), not a test failure.
boot_to=${IH_RXE_BOOT_TIMEOUT:-120}
for attempt in 1 2; do
    rm -f "$CTL/booted" "$CTL/rc"
    timeout --kill-after=5 "${IH_RXE_TIMEOUT:-600}" qemu-system-x86_64 -nodefaults -no-user-config \
        -nographic -no-reboot "${ACC[@]}" -smp "$(nproc)" -m "${IH_RXE_MEM:-2G}" \
        -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.cpio.gz" \
        -append "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init" \
        -serial "file:$CTL/console.log" -chardev stdio,id=out,signal=off -serial chardev:out \
        -fsdev local,id=f0,path=/,security_model=none,readonly=on,multidevs=remap \
        -device virtio-9p-pci,fsdev=f0,mount_tag=hostroot \
        -fsdev "local,id=f1,path=$CTL,security_model=none" -device virtio-9p-pci,fsdev=f1,mount_tag=ihctl \
        -fsdev "local,id=f2,path=$DIR,security_model=none,multidevs=remap" \
        -device virtio-9p-pci,fsdev=f2,mount_tag=hostdir < /dev/null &
    QPID=$!
    hung=0
    for ((t = 0; ; t++)); do
        kill -0 "$QPID" 2>/dev/null || break
        [[ -f $CTL/booted ]] && break
        if ((t >= boot_to)); then hung=1; kill "$QPID" 2>/dev/null; break; fi
        sleep 1
    done
    wait "$QPID"
    qrc=$?
    QPID=
    ((hung)) || break
    echo "rxe-vm: the VM did not boot within ${boot_to} s (attempt $attempt of 2); console:" >&2
    tail -5 "$CTL/console.log" | tr -d '\r' >&2
done
((hung)) && { echo "rxe-vm: the VM did not boot twice; giving up" >&2; exit 125; }
[[ -f $CTL/rc ]] && exit "$(cat "$CTL/rc")"
if ((qrc == 124 || qrc == 137)); then echo "rxe-vm: timed out" >&2; tail -20 "$CTL/console.log" >&2; exit 124; fi
echo "rxe-vm: the VM ended without a result (qemu rc $qrc); console:" >&2
tail -30 "$CTL/console.log" | tr -d '\r' >&2
exit 125
