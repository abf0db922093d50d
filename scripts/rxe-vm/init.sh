#!/bin/busybox sh
# /init of the rxe VM (busybox): loads the modules, mounts the host root read-only and the
# build tree read-write over 9p, brings up Soft-RoCE rxe0 on dummy0 (192.0.2.1/24, MTU 9000:
# RoCE active_mtu 4096), runs /ctl/cmd.sh chrooted into the host root with its output on
# ttyS1, writes the exit code to /ctl/rc and powers off. Kernel log: ttyS0.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
die() { echo "rxe-vm init: $*" > /dev/ttyS0; echo 125 > /ctl/rc; sync; poweroff -f; }
while read -r m; do insmod "/lib/modules/$m" 2> /dev/ttyS0; done < /modules.list
O="trans=virtio,version=9p2000.L,msize=524288"
mount -t 9p -o "$O,cache=none" ihctl /ctl || die "no control share"
echo up > /ctl/booted  # run.sh's boot watchdog: the kernel, the modules and 9p came up
. /ctl/config.sh
R=/newroot
mount -t 9p -o "$O,ro,cache=loose" hostroot $R || die "no host root"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
for d in /tmp /dev/shm /run /var/tmp /root; do [ -d $R$d ] && mount -t tmpfs -o mode=1777 tmpfs $R$d; done
mkdir -p $R/run/ihctl
mount --move /ctl $R/run/ihctl
# A build tree under /tmp (or another folder replaced by a tmpfs above) has no mount point in
# the VM: make one there (the read-only host root keeps its own).
[ -d "$R$IH_DIR" ] || mkdir -p "$R$IH_DIR" 2>/dev/null
mount -t 9p -o "$O,cache=mmap" hostdir "$R$IH_DIR" || die "cannot mount $IH_DIR"
hostname rxe-vm
ip link set lo up
ip link set dummy0 mtu 9000 2>/dev/null || { ip link add dummy0 type dummy; ip link set dummy0 mtu 9000; }
ip link set dummy0 up
ip addr add 192.0.2.1/24 dev dummy0
chroot $R /usr/bin/rdma link add rxe0 type rxe netdev dummy0 2> /dev/ttyS0 || { echo 125 > $R/run/ihctl/rc; poweroff -f; }
i=0; while [ $i -lt 50 ] && ! grep -q ':ffff:' /sys/class/infiniband/rxe0/ports/1/gids/* 2>/dev/null; do sleep 0.1; i=$((i+1)); done
stty -F /dev/ttyS1 raw -echo 2>/dev/null
chroot $R /bin/sh /run/ihctl/cmd.sh < /dev/null > /dev/ttyS1 2>&1
echo $? > $R/run/ihctl/rc
sync
poweroff -f
