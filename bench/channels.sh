#!/usr/bin/env bash
# Channels and versions at size, against the kit's real nginx over TLS:
# - versions: a vendor tree of 5 products × 20 versions, one 50 MiB image
#   each (5,000 MiB), synced with and without `keep = 2` per series;
#   prints what nginx served (bytes, GETs) and the wall time.
# - promotion on the `many` tree (20,000 files): `upmirror promote` whole
#   (it re-hashes the snapshot first) and the one rename that moves the
#   channel, timed by strace.
#
#   bench/channels.sh          # ~5 min on 2 cores, 11 GiB under $BENCH_DIR
#
# Needs: apt-get install -y nginx strace curl bc time python3
source "$(dirname "$0")/common.sh"
RULE='releases/{series}/{version}/**=2'

V=$BENCH_DIR/trees/versions
if [ ! -e "$V/upmirror-manifest.json" ]; then
  rm -rf "$V"
  for p in 1 2 3 4 5; do
    for v in $(seq 1 20); do
      d=$V/releases/product$p/$p.$v
      mkdir -p "$d"
      openssl rand -out "$d/image.iso" $((50 << 20))
      echo "product $p version $p.$v" > "$d/NOTES.txt"
    done
  done
  "$BIN" manifest --quiet "$V"
fi
"$KIT/upstream.sh" start "$V" >/dev/null
"$KIT/upstream.sh" serve "$V" >/dev/null

# One timed sync: wall seconds, GETs and body bytes nginx served, bytes kept.
timed() {
  local label=$1 dest=$2 off t0 t1
  shift 2
  sync
  off=$(stat -c %s "$LOG"); t0=$(date +%s%N)
  "$BIN" sync --quiet --upstream https://127.0.0.1:18444/ --ca-file "$CA" --root "$dest" "$@"
  t1=$(date +%s%N)
  tail -c +$((off + 1)) "$LOG" | awk -v l="$label" -v w="$(echo "($t1 - $t0) / 1000000000" | bc -l)" \
    -v kept="$(du -sb "$dest/current/" | cut -f1)" \
    '$2 == "GET" { g++; b += $4 } END { printf "| %s | %.1f | %d | %.1f | %.1f |\n", l, w, g, b / 1048576, kept / 1048576 }'
}

echo "## versions: 5 products × 20 versions × 50 MiB"
echo
echo "| run | wall s | GETs | MiB served | MiB published |"
echo "| --- | --- | --- | --- | --- |"
D=$BENCH_DIR/dest/versions
rm -rf "$D"; timed "first sync, keep 2 per series" "$D" --keep-versions "$RULE"
timed "no-op, keep 2 per series" "$D" --keep-versions "$RULE"
rm -rf "$D"; timed "first sync, every version" "$D"
rm -rf "$D"

M=$(kit_tree many versions-bench)
"$KIT/upstream.sh" serve "$M" >/dev/null
D=$BENCH_DIR/dest/promote
rm -rf "$D"
"$BIN" sync --quiet --upstream https://127.0.0.1:18444/ --ca-file "$CA" --root "$D"
echo
echo "## promotion on the many tree (20,000 files, 166 MiB)"
echo
echo "| run | whole command s | renames into channels/ | that rename µs |"
echo "| --- | --- | --- | --- |"
for i in 1 2 3; do
  sync
  t0=$(date +%s%N)
  "$BIN" promote stable --quiet --root "$D"
  t1=$(date +%s%N)
  # The same again under strace (slower), for the rename alone.
  strace -f -T -e trace=rename,renameat,renameat2 -o "$BENCH_DIR/strace.out" \
    "$BIN" promote stable --quiet --root "$D"
  grep 'channels/\.stable\.tmp' "$BENCH_DIR/strace.out" |
    awk -v i="$i" -v w="$(echo "($t1 - $t0) / 1000000000" | bc -l)" \
      '{ n++; gsub(/[<>]/, "", $NF); us = $NF * 1e6 } END { printf "| %d | %.3f | %d | %.0f |\n", i, w, n, us }'
done
rm -rf "$D"
"$KIT/upstream.sh" stop >/dev/null
