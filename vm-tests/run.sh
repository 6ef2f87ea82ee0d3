#!/usr/bin/env bash
# Boot a real kernel (Debian's stock linux-image-amd64, not the host's) under qemu + KVM with
# a minimal initramfs, and run guest.sh inside it: the sandbox helper's isolation checks as
# root and as an ordinary user created in the guest. Prints the guest's console; exits 0 only
# if the guest printed `VMTEST RESULT: PASS`.
#
# usage: vm-tests/run.sh            (as root; installs qemu-system-x86 and linux-image-amd64)
# env:   KERNEL=/boot/vmlinuz-...   kernel to boot (default: newest /boot/vmlinuz-*)
#        BRAMBLE_SANDBOX=path       helper binary (default: builds the installed, static one with
#                                   `cargo static-helper`)
#        VM_ACCEL=kvm               use KVM instead of TCG; VM_TIMEOUT=seconds (120)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

need() { command -v "$1" >/dev/null || missing+=("$2"); }
missing=()
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing+=(linux-image-amd64)
[ -x /bin/busybox ] && /bin/busybox --help >/dev/null 2>&1 && ldd /bin/busybox 2>&1 | grep -q "not a dynamic" || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "vm-tests: missing ${missing[*]}; install them (as root)" >&2; exit 2; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
kernel=${KERNEL:-$(ls /boot/vmlinuz-* | sort -V | tail -1)}

if [ -z "${BRAMBLE_SANDBOX:-}" ]; then
  BRAMBLE_SANDBOX=$(cd "$root" && cargo static-helper -q --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
init=$work/initramfs
mkdir -p "$init"/{bin,sbin,dev,proc,sys,tmp,etc,root,home/builder,vm,mnt}
cp /bin/busybox "$init/bin/busybox"
for applet in $("$init/bin/busybox" --list); do [ "$applet" = busybox ] || ln -sf busybox "$init/bin/$applet"; done
# The helper and the shared libraries it links against (none for the static build).
cp "$BRAMBLE_SANDBOX" "$init/vm/bramble-sandbox"
for lib in $(ldd "$BRAMBLE_SANDBOX" 2>/dev/null | grep -o '/[^ ]*' || true); do
  mkdir -p "$init$(dirname "$lib")"; cp -L "$lib" "$init$lib"; done
# The static probe program the sandbox tests use, when its source exists.
probe_src=$root/sandbox/tests/probe/probe.c
if [ -f "$probe_src" ]; then gcc -static -O2 -o "$init/vm/probe" "$probe_src"; fi
cp "$here/guest.sh" "$init/vm/guest.sh"
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
cat > "$init/stage2" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t tmpfs tmp /tmp; chmod 1777 /tmp; chown 1000:1000 /home/builder
echo "VMTEST kernel $(uname -r)"
sh /vm/guest.sh && echo "VMTEST RESULT: PASS" || echo "VMTEST RESULT: FAIL"
poweroff -f
INIT
chmod +x "$init/init" "$init/stage2"
(cd "$init" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

# TCG by default: on this project's machines (themselves Firecracker guests) nested KVM hangs
# at kernel entry with no output, while TCG boots the guest in about 4 s. VM_ACCEL=kvm opts in.
accel=(-machine accel=tcg)
[ "${VM_ACCEL:-tcg}" = kvm ] && accel=(-enable-kvm)
timeout "${VM_TIMEOUT:-120}" qemu-system-x86_64 "${accel[@]}" -m 1024 -smp 2 -nographic -no-reboot \
  -kernel "$kernel" -initrd "$work/initrd.gz" \
  -append "console=ttyS0 earlyprintk=serial panic=-1 ${VM_APPEND:-}" | tee "$work/console.log"
grep -q "VMTEST RESULT: PASS" "$work/console.log"
