#!/usr/bin/env bash
# Boot a real kernel (Debian's stock linux-image-amd64, not the host's) under qemu with a
# minimal initramfs, several times:
#
#   1. `checks`: guest.sh, the sandbox helper's isolation checks as root and as an ordinary
#      user; then guest-bramble.sh: a fresh user builds and runs the fixture project
#      (vm-tests/project) with the default store, and bramble with
#      `user.max_user_namespaces=0` fails with the documented error and registers nothing.
#   2. `powerloss`: the store on a virtio disk image (ext4); the guest builds the fixture's
#      graph and collects it again, over and over, and this script kills qemu (SIGKILL) at a
#      random moment, VM_ROUNDS times. Every boot first runs `bramble store verify`; a last
#      boot lets the build complete, and its paths must be those of a reference build made on
#      this host (as uid 65534, without kills).
#
# Every check prints `ok   <name>` or `FAIL <name>` (the guests' on their console, this
# script's own on stdout); the script ends with `VMTEST RESULT: PASS` and exits 0 only if all
# of them passed.
#
# usage: vm-tests/run.sh            (as root; installs qemu-system-x86, linux-image-amd64,
#                                   busybox-static, cpio, e2fsprogs when missing)
# env:   KERNEL=/boot/vmlinuz-...   kernel to boot (default: newest /boot/vmlinuz-*)
#        BRAMBLE_SANDBOX=path       helper binary (default: builds the installed, static one with
#                                   `cargo static-helper`)
#        BRAMBLE_BIN=path           bramble binary (default: `cargo build --release --bin bramble`)
#        VM_SCENARIOS="checks powerloss"   which to run
#        VM_ROUNDS=N                power-loss rounds, each ended by a kill (10)
#        VM_KILL_MAX_MS=N           a kill lands 0..N ms into the guest's workload (15000)
#        VM_SEED=N                  seed of the kill moments (default: random, printed)
#        VM_ACCEL=kvm               use KVM instead of TCG; VM_TIMEOUT=seconds per boot (300)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

need() { command -v "$1" >/dev/null || missing+=("$2"); }
missing=()
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need mkfs.ext4 e2fsprogs
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=(linux-image-amd64)
[ -x /bin/busybox ] && /bin/busybox --help >/dev/null 2>&1 && ldd /bin/busybox 2>&1 | grep -q "not a dynamic" || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "vm-tests: missing ${missing[*]}; install them (as root)" >&2; exit 2; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
kernel=${KERNEL:-$(ls /boot/vmlinuz-* | sort -V | tail -1)}
kver=${kernel##*/vmlinuz-}

if [ -z "${BRAMBLE_SANDBOX:-}" ]; then
  BRAMBLE_SANDBOX=$(cd "$root" && cargo static-helper -q --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
fi
if [ -z "${BRAMBLE_BIN:-}" ]; then
  BRAMBLE_BIN=$(cd "$root" && cargo build -q --release --bin bramble --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\/bramble\)".*/\1/p')
fi

# World-readable: the reference build runs as uid 65534 below it.
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; chmod 755 "$work"
init=$work/initramfs
mkdir -p "$init"/{bin,sbin,dev,proc,sys,tmp,etc,root,home/builder,vm,mnt}
cp /bin/busybox "$init/bin/busybox"
for applet in $("$init/bin/busybox" --list); do [ "$applet" = busybox ] || ln -sf busybox "$init/bin/$applet"; done
# The helper and bramble, and the shared libraries they link against (none for the static
# helper). bramble finds the helper next to itself.
cp "$BRAMBLE_SANDBOX" "$init/vm/bramble-sandbox"
cp "$BRAMBLE_BIN" "$init/vm/bramble"
for lib in $( (ldd "$BRAMBLE_SANDBOX"; ldd "$BRAMBLE_BIN") 2>/dev/null | grep -o '/[^ ]*' | sort -u || true); do
  mkdir -p "$init$(dirname "$lib")"; cp -L "$lib" "$init$lib"; done
# The static probe program the sandbox tests use, when its source exists.
probe_src=$root/sandbox/tests/probe/probe.c
if [ -f "$probe_src" ]; then gcc -static -O2 -o "$init/vm/probe" "$probe_src"; fi
cp "$here"/guest*.sh "$init/vm/"
# The fixture project, with busybox as one of its files (no network in the guest).
cp -r "$here/project" "$init/vm/project"
cp /bin/busybox "$init/vm/project/busybox"
# The stock kernel has virtio-blk and ext4 as modules: the power-loss boots load them (and
# what they depend on, in order) from /vm/modules.
mkdir -p "$init/vm/modules"
modprobe -a -S "$kver" --show-depends virtio_pci virtio_blk ext4 | awk '$1 == "insmod" {print $2}' |
  awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$init/vm/modules/"; echo "${ko##*/}" >> "$init/vm/modules/order"; done
printf 'root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000:builder:/home/builder:/bin/sh\n' > "$init/etc/passwd"
printf 'root:x:0:\nbuilder:x:1000:\n' > "$init/etc/group"
# pivot_root(2) refuses to move the initramfs `rootfs` (EINVAL), as on every real system the
# sandbox runs on a mounted root: /init copies itself into a tmpfs and switch_root's into it.
cat > "$init/init" <<'INIT'
#!/bin/sh
mount -t tmpfs -o mode=755 root /mnt
cp -a /bin /sbin /etc /root /home /vm /lib* /usr /mnt/ 2>/dev/null
mkdir -p /mnt/dev /mnt/proc /mnt/sys /mnt/tmp
cp /stage2 /mnt/init
exec switch_root /mnt /init
INIT
# stage2 runs the scenario named on the kernel command line (`vmtest=checks|powerloss`).
cat > "$init/stage2" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t tmpfs tmp /tmp; chmod 1777 /tmp; chown 1000:1000 /home/builder
echo "VMTEST kernel $(uname -r)"
export PATH=/bin:/sbin
case " $(cat /proc/cmdline) " in
  *" vmtest=checks "*) sh /vm/guest.sh; a=$?; sh /vm/guest-bramble.sh; b=$?; [ $a = 0 ] && [ $b = 0 ] ;;
  *" vmtest=powerloss "*) sh /vm/guest-powerloss.sh ;;
  *) echo "FAIL no scenario on the kernel command line"; false ;;
esac && echo "VMTEST RESULT: PASS" || echo "VMTEST RESULT: FAIL"
poweroff -f
INIT
chmod +x "$init/init" "$init/stage2"
(cd "$init" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

# TCG by default: on this project's machines (themselves Firecracker guests) nested KVM hangs
# at kernel entry with no output, while TCG boots the guest in about 4 s. VM_ACCEL=kvm opts in.
accel=(-machine accel=tcg)
[ "${VM_ACCEL:-tcg}" = kvm ] && accel=(-enable-kvm)
# start_qemu <console log> <kernel command line> [qemu args...]: start the guest in the
# background (its pid in $qemu), its console going to the log. `no_timer_check`: on a busy
# host, TCG can miss the kernel's early check that the timer interrupt arrives, and the kernel
# panics ("IO-APIC + timer doesn't work!"); the check is for broken hardware, not qemu.
start_qemu() {
  local log=$1 append=$2; shift 2
  started=$SECONDS
  qemu-system-x86_64 "${accel[@]}" -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$work/initrd.gz" "$@" \
    -append "console=ttyS0 earlyprintk=serial panic=-1 no_timer_check $append ${VM_APPEND:-}" > "$log" 2>&1 &
  qemu=$!
}
# wait_for <log> <pattern> <seconds>: until the log has a line matching the pattern (0), qemu
# exited (1) or the time is up (2).
wait_for() {
  local deadline=$((SECONDS + $3))
  while ! grep -q "$2" "$1"; do
    kill -0 "$qemu" 2>/dev/null || { grep -q "$2" "$1"; return $?; }
    [ $SECONDS -lt $deadline ] || return 2
    sleep 0.1
  done
}
# stop_qemu: kill the guest if it still runs (SIGKILL: no flush, no clean unmount), reap it.
stop_qemu() { kill -9 "$qemu" 2>/dev/null || true; qemu_status=0; wait "$qemu" 2>/dev/null || qemu_status=$?; }
# console <log>: the guest's console without carriage returns.
console() { tr -d '\r' < "$1"; }
fail=0
check() { local name=$1; shift; if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi; }
timeout=${VM_TIMEOUT:-300}
scenarios=" ${VM_SCENARIOS:-checks powerloss} "

# The reference build of the power-loss graph: on this host, without kills, as an ordinary
# user (uid 65534) with a store of its own. Store paths are content addresses: the guest's
# build after the kills must print the same ones.
reference=
if [[ $scenarios == *" powerloss "* ]]; then
  ref=$work/reference
  mkdir -p "$ref/home"
  cp "$BRAMBLE_BIN" "$ref/bramble"; cp "$BRAMBLE_SANDBOX" "$ref/bramble-sandbox"
  cp -r "$init/vm/project" "$ref/project"
  chown -R 65534:65534 "$ref/home" "$ref/project"; chmod -R a+rX "$ref"
  if (cd "$ref/project" && setpriv --reuid=65534 --regid=65534 --clear-groups \
      env -i PATH=/usr/bin:/bin BRAMBLE_HOME="$ref/home" "$ref/bramble" build ./:graph \
      > "$ref/out" 2> "$ref/err"); then
    path=$(cat "$ref/out")
    reference=$(echo "${path##*/}"; cat "$path")
  else
    cat "$ref/err"
  fi
  check "power loss: the reference build on this host ($(echo "$reference" | wc -l) paths)" test -n "$reference"
fi

# 1. The checks boot: guest.sh and guest-bramble.sh (its whole console is printed).
if [[ $scenarios == *" checks "* ]]; then
  log=$work/checks.log
  start_qemu "$log" vmtest=checks
  wait_for "$log" "VMTEST RESULT" "$timeout" || true
  stop_qemu
  console "$log"
  check "checks boot: every guest check passed ($((SECONDS - started)) s)" grep -q "VMTEST RESULT: PASS" "$log"
fi

# 2. Power loss. The disk: ext4 made here, attached with cache=writethrough: the guest sees a
# disk without a volatile write cache, and every write qemu completes is in the image (in this
# host's page cache, which outlives qemu). So what the guest flushed survives the kill, and what
# it held only in its own memory (page cache, an uncommitted journal) is lost with qemu, as on a
# power loss. (A drive's volatile cache dropping completed writes is not modelled: no cache mode
# loses them when only qemu dies.)
if [[ $scenarios == *" powerloss "* ]]; then
  disk=$work/disk.img
  truncate -s 512M "$disk"
  mkfs.ext4 -q -F "$disk"
  drive=(-drive "file=$disk,format=raw,if=virtio,cache=writethrough")
  rounds=${VM_ROUNDS:-10}
  seed=${VM_SEED:-$((RANDOM * 32768 + RANDOM))}
  RANDOM=$seed
  # A kill lands between 0 and this many ms after the guest starts its workload (about one
  # build + gc cycle under TCG, so that kills fall anywhere in it).
  kill_max_ms=${VM_KILL_MAX_MS:-15000}
  echo "VMTEST power loss: $rounds rounds, kills 0-$kill_max_ms ms into the workload, VM_SEED=$seed"
  for round in $(seq 1 "$rounds"); do
    log=$work/power-$round.log
    start_qemu "$log" "quiet vmtest=powerloss vmround=$round" "${drive[@]}"
    ready=0; wait_for "$log" "^VMTEST workload" "$timeout" || ready=$?
    delay_ms=$(( (RANDOM * 32768 + RANDOM) % kill_max_ms ))
    [ $ready = 0 ] && sleep "$((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000)))"
    stop_qemu
    console "$log" | grep -E '^(ok|FAIL) ' || true
    where=$(console "$log" | grep -E '^VMTEST (built|collected)' | tail -1 | sed 's/^VMTEST /after /' || true)
    check "power loss round $round: killed ${delay_ms} ms into the workload (${where:-in the first gc}; $((SECONDS - started)) s)" \
      test $ready = 0
    check "power loss round $round: no guest check failed before the kill" \
      sh -c "! tr -d '\r' < '$log' | grep -q '^FAIL '"
    [ $ready = 0 ] || { console "$log" | tail -60; echo "(qemu's status: $qemu_status)"; break; }
  done
  # The last boot, not killed: verify, let the build complete, print its paths.
  log=$work/power-final.log
  start_qemu "$log" "quiet vmtest=powerloss vmround=final" "${drive[@]}"
  wait_for "$log" "VMTEST RESULT" "$timeout" || true
  stop_qemu
  console "$log" | grep -E '^(ok|FAIL|VMTEST) |^-' || true
  check "power loss: the last boot passed its checks ($((SECONDS - started)) s)" grep -q "VMTEST RESULT: PASS" "$log"
  final=$(console "$log" | sed -n 's/^VMTEST graph //p')
  check "power loss: the build after $rounds kills has the reference build's paths" \
    test -n "$reference" -a "$final" = "$reference"
  [ "$final" = "$reference" ] || diff <(echo "$reference") <(echo "$final") || true
fi

[ $fail = 0 ] && echo "VMTEST RESULT: PASS" || echo "VMTEST RESULT: FAIL"
exit $fail
