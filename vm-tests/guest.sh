#!/bin/sh
# Runs inside the VM as root (see run.sh). Each check prints `ok` or `FAIL` and the script
# exits non-zero if any check failed.
fail=0
check() { name=$1; shift; if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi; }
as_builder() { su -s /bin/sh builder -c "$*"; }

check "unprivileged user namespaces are enabled" test "$(cat /proc/sys/user/max_user_namespaces)" -gt 0
check "helper runs" test -x /vm/bramble-sandbox
exit $fail
