#!/bin/sh
# The build script of the hello example: writes a greeting and a runnable script to $out.
set -e
mkdir -p "$out/bin"
echo "Hello from a hermetic build" > "$out/greeting.txt"
printf '#!/bin/sh\ncat %s/greeting.txt\n' "$out" > "$out/bin/hello"
chmod +x "$out/bin/hello"
