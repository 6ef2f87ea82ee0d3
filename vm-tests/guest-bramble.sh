#!/bin/sh
# Runs inside the VM as root (see run.sh), after guest.sh: bramble itself, as the ordinary user
# `builder` (uid 1000, HOME=/home/builder, no BRAMBLE_HOME: the default store under
# ~/.local/share/bramble), on the fixture project /vm/project (busybox is one of its files).
#   - a fresh user builds the project and runs its result;
#   - with `user.max_user_namespaces=0` bramble fails with the documented error and hint and
#     registers nothing.
# Prints `ok`/`FAIL` per check and exits non-zero if any failed.
fail=0
check() { local name=$1; shift; if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; return 1; fi; }
# as_builder <command>: run a shell command as `builder` in its copy of the project; its stdout
# goes to /tmp/out, its stderr to /tmp/err (printed when a check fails: see show).
as_builder() { su -s /bin/sh builder -c "cd ~/project && $1" > /tmp/out 2> /tmp/err; }
show() { echo "--- stdout"; cat /tmp/out; echo "--- stderr"; tail -20 /tmp/err; echo "---"; }
home=/home/builder
store=$home/.local/share/bramble/store

# 1. A fresh user: nothing in its home but the project it copies there.
check "fresh user: no store before the first command" test ! -e $home/.local
su -s /bin/sh builder -c 'cp -r /vm/project ~/project'
as_builder "/vm/bramble build ./:hello"; status=$?
hello=$(cat /tmp/out)
check "fresh user: bramble build ./:hello succeeds" test $status = 0 || show
check "fresh user: the output is in the default store" \
  sh -c "case '$hello' in $store/*-hello) [ -x '$hello/bin/hello' ] ;; *) false ;; esac"
check "fresh user: the store belongs to the user" \
  test "$(stat -c %u $store)" = 1000 -a "$(stat -c %u "$hello/bin/hello")" = 1000
check "fresh user: the output is read-only" sh -c "! su -s /bin/sh builder -c 'touch $hello/x' 2>/dev/null"
as_builder "/vm/bramble run ./:main"; status=$?
check "fresh user: bramble run ./:main prints the greeting" \
  test $status = 0 -a "$(cat /tmp/out)" = "hello from the vm" || show
as_builder "/vm/bramble store verify"; status=$?
check "fresh user: bramble store verify is clean" test $status = 0 || show

# Root's own store (root builds as root: its default store under /root) is readable but not
# writable by `builder`.
mkdir -p /root/project && cp -r /vm/project/. /root/project/
(cd /root/project && /vm/bramble build ./:hello > /tmp/out 2> /tmp/err); status=$?
check "root: bramble build ./:hello succeeds" test $status = 0 || show
rootstore=/root/.local/share/bramble
check "builder cannot write root's store" sh -c "! su -s /bin/sh builder -c '
  touch $rootstore/store/planted || mkdir $rootstore/store/planted || touch $rootstore/db.sqlite ||
  touch $(cat /tmp/out)/planted' 2>/dev/null"
check "builder cannot use root's store" sh -c "! su -s /bin/sh builder -c '
  cd ~/project && BRAMBLE_HOME=$rootstore /vm/bramble build ./:unbuilt' >/dev/null 2>&1"

# 2. No user namespaces: the build fails with the documented error and hint, and the store
# holds what it held before (the step's only input, busybox, is built already).
as_builder "/vm/bramble store verify"
before=$(grep -o 'checked [0-9]* store paths' /tmp/err)
objects=$(ls -A $store | wc -l)
sysctl -w user.max_user_namespaces=0 >/dev/null
as_builder "/vm/bramble build ./:unbuilt"; status=$?
check "no user namespaces: bramble build fails" test $status != 0
sed 's/^/  | /' /tmp/err
check "no user namespaces: the error says so" grep -q "unprivileged user namespace" /tmp/err || show
check "no user namespaces: the hint names the sysctl" \
  grep -q "hint:.*user.max_user_namespaces" /tmp/err || show
check "no user namespaces: no new store object" test "$(ls -A $store | wc -l)" = "$objects"
as_builder "/vm/bramble store verify"; status=$?
check "no user namespaces: store verify is clean, no new valid path ($before)" \
  test $status = 0 -a "$(grep -o 'checked [0-9]* store paths' /tmp/err)" = "$before" || show
sysctl -w user.max_user_namespaces=15000 >/dev/null
exit $fail
