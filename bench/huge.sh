#!/usr/bin/env bash
# The `huge` profile end to end: 1,000,000 files of 1 B–8 KiB (log-uniform)
# in 10,000 directories, generated once with the kit's gen-tree.py (seed 7)
# and given an upmirror manifest, served by the kit's nginx over TLS on
# loopback. Runs, each with wall time and peak RSS (GNU time): the full
# sync, a no-op, a 1 % change (the kit's `mutate --pct 1`: 1 % changed,
# 1 % added, 1 % deleted), `verify` of the published snapshot, and a sync
# of another 1 % change with --keep 1 (publish, then prune the oldest).
# Beside it: `find -type f | xargs sha256sum` on the same tree, verify's
# floor, and rclone's full sync of the same tree (as the kit runs it).
# Each full sync writes into a file system of its own, made fresh (ext4 on
# a loop device): ext4 allocates inodes slowly for a while after a million
# files were deleted (`recently_deleted`), which a deleted earlier run
# would otherwise charge to whichever tool comes next.
#
#   bench/huge.sh        # as root; needs: apt-get install -y nginx curl python3 time rclone; ~20 GB of disk
source "$(dirname "$0")/common.sh"
T=$BENCH_DIR/trees/huge/base
if [ ! -e "$T/upmirror-manifest.json" ]; then
  rm -rf "$T"
  python3 "$KIT/gen-tree.py" generate custom "$T" --files 1000000 --sizes 1000000:1-8K --depth 2 --fanout 100 --seed 7
  "$BIN" manifest --quiet "$T"
fi
"$KIT/upstream.sh" start "$T" >/dev/null
"$KIT/upstream.sh" serve "$T" >/dev/null
D=$BENCH_DIR/dest/huge
R=$BENCH_DIR/dest/huge-rclone
trap '"$KIT/upstream.sh" stop >/dev/null; umount "$D" "$R" 2>/dev/null || true' EXIT
fresh_fs "$D" 4000000
fresh_fs "$R" 4000000

run() {
  local label=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$BENCH_DIR/huge.time" "$@" >/dev/null
  read -r wall rss < "$BENCH_DIR/huge.time"
  printf '| %s | %.2f | %.0f |\n' "$label" "$wall" "$((rss / 1024))"
}
sync_args=(sync --quiet --upstream https://127.0.0.1:18444/ --ca-file "$CA" --root "$D" --max-delete-percent 100)
echo "| huge (1,000,000 files) | wall s | peak RSS MiB |"
echo "| --- | --- | --- |"
run "full sync" "$BIN" "${sync_args[@]}"
: > "$BENCH_DIR/rclone.conf"
run "rclone full sync (crawls the HTML listings)" rclone sync --config "$BENCH_DIR/rclone.conf" -q \
  --http-url https://127.0.0.1:18443/ --ca-cert "$CA" --transfers 8 --checkers 16 :http: "$R"
run "no-op" "$BIN" "${sync_args[@]}"
python3 "$KIT/gen-tree.py" mutate "$T" --pct 1 --seed 1 && "$BIN" manifest --quiet "$T"
run "1 % changed, added and deleted" "$BIN" "${sync_args[@]}"
run "verify" "$BIN" verify --quiet --root "$D"
run "find | xargs sha256sum (floor)" sh -c "cd '$D/current' && find . -type f -print0 | xargs -0 -P 2 -n 2000 sha256sum"
python3 "$KIT/gen-tree.py" mutate "$T" --pct 1 --seed 2 && "$BIN" manifest --quiet "$T"
run "1 % again, --keep 1 --grace 0 (prunes the two older)" "$BIN" "${sync_args[@]}" --keep 1 --grace 0
echo "snapshots kept: $(ls "$D/snapshots" | wc -l)"
