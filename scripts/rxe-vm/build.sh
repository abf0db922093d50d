#!/bin/bash
# scripts/rxe-vm/build.sh — prepares, once, what run.sh boots: Debian's stock kernel (only
# `apt-get download`ed and unpacked, never installed; it has CONFIG_RDMA_RXE=m) and a busybox
# initramfs with the virtio/9p/RDMA modules and init.sh. The VM's userspace is this host's own
# root filesystem, so the host's libibverbs/librdmacm/rxe provider and host-built binaries run
# in it unchanged (see shared/SOFT-ROCE.md for the recipe and its pitfalls).
# Exit: 0 ready; 77 cannot be built here (message says why); 1 build failure.
# Cache: $IH_RXE_CACHE (default /tmp/ih-rxe-vm); rebuilt when init.sh or this file change.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${IH_RXE_CACHE:-/tmp/ih-rxe-vm}
log() { echo "rxe-vm/build: $*" >&2; }
skip() { echo "SKIP: $* (see shared/SOFT-ROCE.md)" >&2; exit 77; }

for t in qemu-system-x86_64 busybox cpio gzip modprobe depmod apt-get dpkg-deb rdma; do
    command -v "$t" >/dev/null 2>&1 || skip "no $t (scripts/install-deps installs the VM packages)"
done
[[ -e /etc/libibverbs.d/rxe.driver ]] || skip "no rxe userspace provider (ibverbs-providers)"
if [[ -f $CACHE/vmlinuz && -f $CACHE/initrd.cpio.gz && $CACHE/initrd.cpio.gz -nt $HERE/init.sh &&
      $CACHE/initrd.cpio.gz -nt $HERE/build.sh ]]; then
    exit 0
fi
mkdir -p "$CACHE"
W=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$W"' EXIT
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $kpkg ]] || skip "apt-cache knows no linux-image-amd64 (run apt-get update)"
log "downloading $kpkg (unpacked, not installed)"
(cd "$W" && apt-get download -qq "$kpkg" >/dev/null 2>&1) || skip "cannot apt-get download $kpkg (no mirror access?)"
dpkg-deb -x "$W"/"$kpkg"_*.deb "$W/k"
KVER=$(ls "$W/k/lib/modules" | head -1)
grep -q '^CONFIG_RDMA_RXE=m' "$W"/k/boot/config-* || { log "$kpkg has no rdma_rxe module"; exit 1; }
[[ -f $W/k/lib/modules/$KVER/modules.dep ]] || depmod -b "$W/k" "$KVER"

IR=$W/ir
mkdir -p "$IR"/{bin,dev,proc,sys,newroot,ctl,lib/modules}
cp "$(command -v busybox)" "$IR/bin/busybox"
cp "$HERE/init.sh" "$IR/init"
chmod 755 "$IR/init"
# In load order; dependencies come from modprobe --show-depends. crc32_generic: rxe's ICRC
# needs the crypto "crc32", which nothing can autoload in a bare initramfs.
WANT=(virtio_pci 9pnet_virtio 9p dummy crc32_generic udp_tunnel ip6_udp_tunnel ib_core
      ib_uverbs rdma_rxe ib_cm iw_cm rdma_cm rdma_ucm)
: > "$IR/modules.list"
declare -A seen=()
MB=$W/k/lib/modules/$KVER
for m in "${WANT[@]}"; do
    while read -r cmd path _; do
        [[ $cmd == insmod && -z ${seen[$path]:-} ]] || continue
        seen[$path]=1
        rel=${path#"$MB"/}
        mkdir -p "$IR/lib/modules/$(dirname "$rel")"
        cp "$path" "$IR/lib/modules/$rel"
        case $rel in *.xz) xz -d "$IR/lib/modules/$rel"; rel=${rel%.xz} ;; esac
        echo "$rel" >> "$IR/modules.list"
    done < <(modprobe -S "$KVER" -d "$W/k" --show-depends "$m")
done
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) > "$W/initrd.cpio.gz"
cp "$W"/k/boot/vmlinuz-* "$CACHE/vmlinuz"
mv "$W/initrd.cpio.gz" "$CACHE/initrd.cpio.gz"
log "ready: $CACHE ($KVER)"
