#!/bin/sh
# One boot of the power-loss scenario, inside the VM as root (see run.sh). The store lives on
# the virtio disk (/dev/vda, ext4, mounted on /home): `builder`'s default store under
# ~/.local/share/bramble. Each boot first runs `bramble store verify`: after a kill (run.sh kills
# qemu at a random moment of the previous boot's workload) it must be clean. Then, on a boot
# that is to be killed (`vmround=<n>`), the workload, as `builder`, until the kill: collect
# (`bramble gc`), build the fixture's graph in seven short commands (each bramble process that
# ends checkpoints the database, so progress survives the kills), remove the `result` link, and
# again. On the last boot (`vmround=final`): build the graph to completion and print its paths
# (`VMTEST graph`) for run.sh to compare with the reference build's.
# Prints `ok`/`FAIL` per check and exits non-zero if any failed.
fail=0
check() { local name=$1; shift; if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; return 1; fi; }
as_builder() { su -s /bin/sh builder -c "cd ~/project && $1" > /tmp/out 2> /tmp/err; }
show() { echo "--- stdout"; cat /tmp/out; echo "--- stderr"; tail -20 /tmp/err; echo "---"; }
round=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^vmround=//p')
r="power loss round $round"

# virtio-blk and ext4 are modules in Debian's kernel (run.sh lists them in dependency order).
# One may fail without harm: crc32c-intel needs SSE 4.2, which TCG's default CPU lacks
# (crc32c_generic does the work); a missing one shows as the mount failing.
while read -r ko; do insmod /vm/modules/"$ko" 2>/dev/null; done < /vm/modules/order
for _ in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
echo "VMTEST modules loaded at $(cut -d' ' -f1 /proc/uptime) s"
# commit=1: ext4 commits its journal every second (default 5), as it does at any moment when
# another process calls fsync: more of the states a power loss can leave are reachable.
check "$r: the disk mounts" mount -t ext4 -o commit=1 /dev/vda /home || exit 1
if [ ! -d /home/builder/project ]; then
  mkdir -p /home/builder && chown 1000:1000 /home/builder
  su -s /bin/sh builder -c 'rm -rf ~/project.tmp && cp -r /vm/project ~/project.tmp && mv ~/project.tmp ~/project'
  sync
fi

as_builder "/vm/bramble store verify"; status=$?
check "$r: store verify is clean ($(grep -o 'checked [0-9]* store paths' /tmp/err))" test $status = 0 || show

echo "VMTEST workload at $(cut -d' ' -f1 /proc/uptime) s"
if [ "$round" = final ]; then
  as_builder "/vm/bramble build ./:graph"; status=$?
  check "$r: the build completes (at $(cut -d' ' -f1 /proc/uptime) s)" test $status = 0 || show
  echo "VMTEST graph $(basename "$(cat /tmp/out)")"
  sed 's/^/VMTEST graph /' "$(cat /tmp/out)"
  as_builder "/vm/bramble store verify"; status=$?
  check "$r: store verify is clean after the build" test $status = 0 || show
else
  cycle=0
  while :; do
    cycle=$((cycle + 1))
    # First collect: on the first cycle of a boot, what the killed boot built that the last
    # `result` link does not keep (and its crash leftovers); later, everything.
    as_builder "/vm/bramble gc" ||
      { check "$r: gc (cycle $cycle) succeeds" false; show; exit 1; }
    echo "VMTEST collected (cycle $cycle) at $(cut -d' ' -f1 /proc/uptime) s"
    for step in busybox leaves_a leaves_b leaves_c chain_half chain graph; do
      as_builder "/vm/bramble build ./:$step" ||
        { check "$r: build of $step (cycle $cycle) succeeds" false; show; exit 1; }
      echo "VMTEST built $step (cycle $cycle) at $(cut -d' ' -f1 /proc/uptime) s"
    done
    as_builder "rm -f result"
  done
fi
exit $fail
