#!/bin/sh
# The generator of the dao example. It runs in the sandbox like any build (no network) and
# writes $out/derivations.json: one step per line of parts.txt, and `all`, which joins them.
# Inside the document, `{{ <id>:out }}` names the output of another generated step; bramble
# replaces it by the real template when it splices the document into the build.
set -e
bb="$BUSYBOX"
"$bb" mkdir -p "$out"
{
  printf '{"version": 1, "result": "all", "derivations": {\n'
  deps=""
  n=0
  while read -r word; do
    [ -n "$word" ] || continue
    printf '  "part-%d": {"name": "part-%d", "builder": "%s", "args": ["sh", "-c", "echo chapter %d: %s > $out"]},\n' \
      "$n" "$n" "$bb" "$n" "$word"
    deps="$deps {{ part-$n:out }}"
    n=$((n + 1))
  done < parts.txt
  printf '  "all": {"name": "all", "builder": "%s", "args": ["sh", "-c", "%s cat%s > $out"]}\n}}\n' \
    "$bb" "$bb" "$deps"
} > "$out/derivations.json"
