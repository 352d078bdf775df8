#!/usr/bin/env bash
# A first sync seeded from a local tree: the kit's `small` tree (2,000 files,
# 208 MiB) with a manifest, served by the kit's nginx over TLS; a seed that
# holds every other file (a copy, mtimes kept: on the same file system these
# are hardlinked) and, in a second seed, the same files with other mtimes
# (copied). Prints wall time, what nginx served and what the seeds gave.
#
#   bench/seeds.sh        # needs: apt-get install -y nginx curl bc python3
source "$(dirname "$0")/common.sh"
T=$(kit_tree small seeds-bench)
"$KIT/upstream.sh" start "$T" >/dev/null
"$KIT/upstream.sh" serve "$T" >/dev/null
S=$BENCH_DIR/seed-linked C=$BENCH_DIR/seed-copied
rm -rf "$S" "$C"
(cd "$T" && find . -type f ! -name 'upmirror-*' | sort | awk 'NR % 2 == 0') > "$BENCH_DIR/seed.list"
mkdir -p "$S" "$C"
tar -C "$T" -cf - -T "$BENCH_DIR/seed.list" | tar -C "$S" -xf -
tar -C "$T" -cf - -T "$BENCH_DIR/seed.list" | tar -C "$C" -xf - && find "$C" -type f -exec touch {} +

echo "| first sync | wall s | GETs | MiB served | MiB seeded | seeded files |"
echo "| --- | --- | --- | --- | --- | --- |"
for run in "none" "$S" "$C"; do
  D=$BENCH_DIR/dest/seeds; rm -rf "$D"
  args=(); [ "$run" = none ] || args=(--seed-from "$run")
  sync; off=$(stat -c %s "$LOG"); t0=$(date +%s%N)
  "$BIN" sync --quiet --upstream https://127.0.0.1:18444/ --ca-file "$CA" --root "$D" "${args[@]}"
  t1=$(date +%s%N)
  seeded=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])).get("seeded") or {}; print(s.get("bytes",0), s.get("files",0))' "$D/.upmirror/status.json")
  label=$([ "$run" = none ] && echo "no seed" || ([ "$run" = "$S" ] && echo "seed, mtimes kept (linked)" || echo "seed, other mtimes (copied)"))
  tail -c +$((off + 1)) "$LOG" | awk -v l="$label" -v w="$(echo "($t1 - $t0) / 1000000000" | bc -l)" -v s="$seeded" \
    'BEGIN { split(s, a, " ") } $2 == "GET" { g++; b += $4 } END { printf "| %s | %.2f | %d | %.1f | %.1f | %d |\n", l, w, g, b / 1048576, a[1] / 1048576, a[2] }'
done
rm -rf "$BENCH_DIR/dest/seeds" "$S" "$C"
"$KIT/upstream.sh" stop >/dev/null
