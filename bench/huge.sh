#!/usr/bin/env bash
# The `huge` profile end to end: 1,000,000 files of 1 B–8 KiB (log-uniform)
# in 10,000 directories, generated once with the kit's gen-tree.py (seed 7)
# and given an upmirror manifest, served by the kit's nginx over TLS on
# loopback. Runs, each with wall time and peak RSS (GNU time): the full
# sync, a no-op, a 1 % change (the kit's `mutate --pct 1`: 1 % changed,
# 1 % added, 1 % deleted), `verify` of the published snapshot, and a sync
# of another 1 % change with --keep 1 (publish, then prune the oldest).
# Beside it: rclone's full sync of the same tree (as the kit runs it); two
# floors of a full sync: the durable copy (`cp -a` of the tree into a fresh
# file system, then `sync`) and every file fetched to nowhere over HTTP/2
# (h2load: one connection per 1,000 requests, as nginx closes a
# connection after 1,000); and verify's floor, `find -type f | xargs
# sha256sum` on the same tree, both read from a cold page cache
# (drop_caches), then again warm. The upstream tree is read once before
# the first run, so every tool finds it in the page cache.
# Each full sync writes into a file system of its own, made fresh (ext4 on
# a loop device): ext4 allocates inodes slowly for a while after a million
# files were deleted (`recently_deleted`), which a deleted earlier run
# would otherwise charge to whichever tool comes next.
#
#   bench/huge.sh        # as root; needs: apt-get install -y nginx curl python3 time rclone nghttp2-client; ~20 GB of disk
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
C=$BENCH_DIR/dest/huge-cp
trap '"$KIT/upstream.sh" stop >/dev/null; umount "$D" "$R" "$C" 2>/dev/null || true' EXIT
fresh_fs "$D" 4000000
fresh_fs "$R" 4000000
fresh_fs "$C" 4000000
tar -cf - -C "$T" . | cat >/dev/null

run() {
  local label=$1; shift
  sync
  if [ "${COLD:-0}" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
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
run "cp -a + sync (durable floor)" sh -c "cp -a '$T' '$C/tree' && sync"
(cd "$T" && find . -type f | sed 's|^\./|https://127.0.0.1:18444/|') > "$BENCH_DIR/huge-urls.txt"
n=$(wc -l < "$BENCH_DIR/huge-urls.txt")
run "h2load, every file to nowhere (network floor)" h2load -i "$BENCH_DIR/huge-urls.txt" -n "$n" -c $((n / 1000 + 1)) -m 16 -t 1
run "no-op" "$BIN" "${sync_args[@]}"
python3 "$KIT/gen-tree.py" mutate "$T" --pct 1 --seed 1 && "$BIN" manifest --quiet "$T"
run "1 % changed, added and deleted" "$BIN" "${sync_args[@]}"
floor=(sh -c "cd '$D/current' && find . -type f -print0 | xargs -0 -P 2 -n 2000 sha256sum")
COLD=1 run "verify, cold" "$BIN" verify --quiet --root "$D"
COLD=1 run "sha256sum of every file (floor), cold" "${floor[@]}"
run "verify, warm" "$BIN" verify --quiet --root "$D"
run "sha256sum of every file (floor), warm" "${floor[@]}"
python3 "$KIT/gen-tree.py" mutate "$T" --pct 1 --seed 2 && "$BIN" manifest --quiet "$T"
run "1 % again, --keep 1 --grace 0 (prunes the two older)" "$BIN" "${sync_args[@]}" --keep 1 --grace 0
echo "snapshots kept: $(ls "$D/snapshots" | wc -l)"
