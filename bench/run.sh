#!/usr/bin/env bash
# upmirror's benchmark: the shared kit (../shared/bench) runs upmirror beside
# rclone, lftp, wget and the machine's floors against a real nginx over TLS on
# 127.0.0.1 (profiles small, many, big; phases full, no-op, incremental), then
# upmirror alone against a manifest upstream, then the 1M-entry planning bench.
#
#   bench/run.sh                                  # everything (~15 min on 2 cores)
#   PROFILES=small TOOLS=rclone RUNS=1 bench/run.sh   # a quick subset
#   TOOLS= PHYSICAL=0 bench/run.sh                # upmirror alone
#
# Needs: apt-get install -y nginx rclone lftp wget rsync curl bc time
# Results: $BENCH_DIR/results/peers.md (tables) and this script's output.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-$(cd ../shared/bench && pwd)}
export BENCH_DIR=${BENCH_DIR:-/tmp/upmirror-bench}
export PROFILES=${PROFILES:-"small many big"}
export TOOLS=${TOOLS-"rclone lftp wget"}

cargo build --release --quiet
BIN=$PWD/target/release/upmirror
# The kit's mutation deletes 1% of the files but at least one: on `big` (4
# files) that is 25%, which the delete guard (10%) rightly refuses. The peers
# have no such guard, so it is opened here to compare the same work.
export UPMIRROR_CMD="$BIN sync --quiet --max-delete-percent 100 --upstream {json_url} --ca-file {ca} --root {dest}"
export UPMIRROR_TREE=current
KEEP_UPSTREAM=1 "$KIT/run-peers.sh"
cat "$BENCH_DIR/results/peers.md"

# Manifest upstream: the same trees with an upmirror-manifest.json beside them.
echo
echo "## upmirror, manifest upstream (one conditional request when nothing changed)"
echo
echo "| profile | phase | wall s | user+sys s | peak RSS MiB | requests |"
echo "| --- | --- | --- | --- | --- | --- |"
LOG=$BENCH_DIR/nginx/logs/access.log
CA=$BENCH_DIR/pki/ca.crt
for p in $PROFILES; do
  m=$BENCH_DIR/trees/$p/with-manifest
  if [ ! -e "$m/upmirror-manifest.json" ]; then
    rm -rf "$m"; cp -al "$BENCH_DIR/trees/$p/base" "$m"
    "$BIN" manifest --quiet "$m"
  fi
  "$KIT/upstream.sh" serve "$m"
  dest=$BENCH_DIR/dest/upmirror-manifest
  run() {
    local phase=$1 off t0 t1
    sync
    off=$(stat -c %s "$LOG"); t0=$(date +%s%N)
    /usr/bin/time -f '%U %S %M' -o "$BENCH_DIR/time" "$BIN" sync --quiet --upstream https://127.0.0.1:18444/ --ca-file "$CA" --root "$dest"
    t1=$(date +%s%N)
    read -r u s rss < "$BENCH_DIR/time"
    printf '| %s | %s | %.3f | %.2f | %.1f | %d |\n' "$p" "$phase" "$(echo "($t1 - $t0) / 1000000000" | bc -l)" \
      "$(echo "$u + $s" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$(tail -c +$((off + 1)) "$LOG" | wc -l)"
  }
  for i in 1 2 3; do rm -rf "$dest"; run full; done
  for i in 1 2 3 4 5; do run no-op; done
  rm -rf "$dest"
done
"$KIT/upstream.sh" stop

echo
cargo bench --quiet --bench plan
