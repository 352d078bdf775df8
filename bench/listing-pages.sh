#!/usr/bin/env bash
# One directory of N entries, crawled from the kit's real nginx as an HTML
# listing and as JSON: the wall time of a no-op run (the listing read and
# compared, nothing fetched), for N = 2,000, 8,000 and 16,000.
#
#   bench/listing-pages.sh        # needs: apt-get install -y nginx curl bc
source "$(dirname "$0")/common.sh"
echo "| entries | HTML no-op s | JSON no-op s |"
echo "| --- | --- | --- |"
for n in 2000 8000 16000; do
  t=$BENCH_DIR/trees/flat-$n
  if [ ! -d "$t/pool" ]; then
    mkdir -p "$t/pool"
    for i in $(seq -w 1 "$n"); do echo "$i" > "$t/pool/package-$i.deb"; done
  fi
  "$KIT/upstream.sh" start "$t" >/dev/null
  "$KIT/upstream.sh" serve "$t" >/dev/null
  row="| $n |"
  for port in 18443 18444; do
    d=$BENCH_DIR/dest/flat; rm -rf "$d"
    "$BIN" sync --quiet --upstream "https://127.0.0.1:$port/" --ca-file "$CA" --root "$d"
    t0=$(date +%s%N)
    "$BIN" sync --quiet --upstream "https://127.0.0.1:$port/" --ca-file "$CA" --root "$d"
    t1=$(date +%s%N)
    row="$row $(echo "scale=2; ($t1 - $t0) / 1000000000" | bc) |"
  done
  echo "$row"
done
rm -rf "$BENCH_DIR/dest/flat"
"$KIT/upstream.sh" stop >/dev/null
