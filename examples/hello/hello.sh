#!/bin/sh
# The build script of the hello example: writes a greeting and a runnable script to $out.
# The sandbox holds nothing but the pinned busybox ($BUSYBOX): link its applets first.
set -e
"$BUSYBOX" mkdir -p /build/.bin
"$BUSYBOX" --install -s /build/.bin
PATH=/build/.bin
mkdir -p "$out/bin"
echo "Hello from a hermetic build" > "$out/greeting.txt"
printf '#!%s sh\ncat %s/greeting.txt\n' "$BUSYBOX" "$out" > "$out/bin/hello"
chmod +x "$out/bin/hello"
