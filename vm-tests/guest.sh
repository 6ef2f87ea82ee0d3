#!/bin/sh
# Runs inside the VM as root (see run.sh), on Debian's stock kernel: the sandbox helper's
# isolation checks, run by the static probe from sandbox/tests/probe, once as root and once as
# the ordinary user `builder` (uid 1000) created in the guest. Prints `ok`/`FAIL` per check
# and exits non-zero if any failed.
fail=0
check() { name=$1; shift; if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi; }

check "unprivileged user namespaces are enabled" test "$(cat /proc/sys/user/max_user_namespaces)" -gt 0
check "the probe was built" test -x /vm/probe

# A store with the probe as the only input, and a spec template (see sandbox/src/lib.rs).
probe_path=0a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p-probe
mkdir -p /tmp/vm/store/$probe_path/bin && cp /vm/probe /tmp/vm/store/$probe_path/bin/probe
chmod -R a+rX /tmp/vm && chmod 755 /tmp/vm

# sandbox <user> <uid> <gid> <probe args...>: run the probe in the sandbox as <user>.
sandbox() {
  user=$1 uid=$2 gid=$3; shift 3
  dir=$(mktemp -d /tmp/vm/run.XXXXXX); mkdir "$dir/build" "$dir/stage"
  chown "$uid:$gid" "$dir/build" "$dir/stage"; chmod 755 "$dir"
  args=""; for a in "$@"; do args="$args\"$a\","; done
  cat > "$dir/spec.json" <<SPEC
{"builder": "/bramble/store/$probe_path/bin/probe", "args": [${args%,}],
 "binds": [
  {"source": "$dir/stage", "target": "/bramble/store", "writable": true},
  {"source": "/tmp/vm/store/$probe_path", "target": "/bramble/store/$probe_path"},
  {"source": "$dir/build", "target": "/build", "writable": true}],
 "env": {"out": "/bramble/store/3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s-out"}}
SPEC
  chmod 644 "$dir/spec.json"
  if [ "$user" = root ]; then
    # As root the builder is the unprivileged id 880803840 + the helper's pid (see
    # sandbox/src/ids.rs): give it the writable directories once the helper runs, before
    # the spec goes out through a fifo (as the build engine does).
    mkfifo "$dir/spec.fifo"
    /vm/bramble-sandbox $flags < "$dir/spec.fifo" & pid=$!
    id=$((880803840 + pid % 4194304)); chown "$id:$id" "$dir/build" "$dir/stage"
    cat "$dir/spec.json" > "$dir/spec.fifo"; wait $pid
  else su -s /bin/sh "$user" -c "/vm/bramble-sandbox $flags < $dir/spec.json"; fi
}

# Each check as root and as `builder`, with the spec read before the namespaces exist and
# `--warm` (read after; the bind sources under the covered /tmp are opened through it).
for who in "root 0 0 cold" "builder 1000 1000 cold" "root 0 0 warm" "builder 1000 1000 warm"; do
  set -- $who
  user=$1 uid=$2 gid=$3 label="$1 ($4)" flags=""
  [ "$4" = warm ] && flags=--warm
  ids="$uid $gid"; [ "$user" = root ] && ids="sandbox sandbox"
  check "$label: uid/gid map to one unprivileged id" sandbox $user $uid $gid ids $ids
  check "$label: host processes invisible" sandbox $user $uid $gid pids
  check "$label: no capabilities, no_new_privs" sandbox $user $uid $gid caps
  check "$label: setuid chmod refused" sandbox $user $uid $gid chmod /build
  check "$label: xattr writes refused" sandbox $user $uid $gid xattr /build
  check "$label: io_uring refused, xattr writes through it too" sandbox $user $uid $gid io-uring /build
  check "$label: TIOCSTI refused" sandbox $user $uid $gid tiocsti
  check "$label: foreign-arch syscalls refused" sandbox $user $uid $gid foreign-arch
  check "$label: only lo" sandbox $user $uid $gid net-ifaces
  check "$label: /proc/sys read-only, kernel internals masked" sandbox $user $uid $gid proc
  check "$label: host device nodes unchangeable" sandbox $user $uid $gid dev-nodes
  check "$label: host files absent" sandbox $user $uid $gid absent /etc/passwd /home /root /vm
  sandbox $user $uid $gid exit 7; check "$label: exit status passes through" test $? = 7
done
exit $fail
