#!/usr/bin/env bash
# upmirror beside rclone and lftp over a long link: the kit's wan-proxy.py
# (../shared/bench: every byte delayed half the RTT each way, the downstream
# shaped to WAN_MBIT, WAN_WINDOW_KIB in flight per connection) in front of
# the kit's nginx. Each tool's default settings (the peers as the kit runs
# them); full sync and a no-op run of one profile, the tools interleaved run
# by run. The floor is the tree's bytes ÷ the link rate.
#
#   bench/wan.sh                                             # small, 50 ms, 400 Mbit/s, 3 runs
#   PROFILE=many WAN_RTT_MS=50 WAN_MBIT=400 RUNS=1 bench/wan.sh
#   TOOLS=upmirror UPMIRROR_ARGS="--concurrency 16" bench/wan.sh
#   PROFILE=one WAN_RTT_MS=150 WAN_MBIT=200 WAN_WINDOW_KIB=1024 RUNS=1 bench/wan.sh
#
# Profile `one` is one 1 GiB file with an upmirror manifest beside it (a
# manifest's digest is what lets upmirror fetch a file in ranges); the other
# profiles are the kit's, crawled from their JSON listings, or with
# MANIFEST=1 served with an upmirror manifest (a hardlinked copy of the tree).
#
# Each full sync writes into an ext4 file system of its own, made fresh
# (bench/common.sh's fresh_fs; as root).
#
# Needs: apt-get install -y nginx rclone lftp curl
source "$(dirname "$0")/common.sh"
PROFILE=${PROFILE:-small} RUNS=${RUNS:-3} TOOLS=${TOOLS:-"upmirror rclone lftp"}
RTT=${WAN_RTT_MS:-50} MBIT=${WAN_MBIT:-400} WINDOW=${WAN_WINDOW_KIB:-4096}
TREE=$BENCH_DIR/trees/$PROFILE/base
if [ ! -d "$TREE" ]; then
  case $PROFILE in
    one) "$KIT/gen-tree.py" generate custom "$TREE" --files 1 --sizes 1:1024M-1024M --depth 1 --fanout 1
         "$BIN" manifest "$TREE" >/dev/null ;;
    *) "$KIT/gen-tree.py" generate "$PROFILE" "$TREE" ;;
  esac
fi
if [ "${MANIFEST:-0}" = 1 ] && [ "$PROFILE" != one ]; then
  [ -d "$TREE.manifest" ] || { cp -al "$TREE" "$TREE.manifest" && "$BIN" manifest "$TREE.manifest" >/dev/null; }
  TREE=$TREE.manifest
fi
"$KIT/upstream.sh" start "$TREE" >/dev/null
python3 "$KIT/wan-proxy.py" 29443 18443 --rtt-ms "$RTT" --mbit "$MBIT" --window-kib "$WINDOW" >/dev/null 2>&1 &
html=$!
python3 "$KIT/wan-proxy.py" 29444 18444 --rtt-ms "$RTT" --mbit "$MBIT" --window-kib "$WINDOW" >/dev/null 2>&1 &
json=$!
DEST=$BENCH_DIR/dest/wan
trap 'kill $html $json 2>/dev/null; "$KIT/upstream.sh" stop >/dev/null; umount "$DEST"/* 2>/dev/null || true' EXIT
touch "$BENCH_DIR/rclone.conf"
until curl -sf --cacert "$CA" -o /dev/null https://127.0.0.1:29444/; do sleep 0.1; done

command_of() {
  case $1 in
    upmirror) echo "$BIN sync --quiet ${UPMIRROR_ARGS:-} --upstream https://127.0.0.1:29444/ --ca-file $CA --root $DEST/upmirror" ;;
    rclone) echo "rclone sync --config $BENCH_DIR/rclone.conf -q --http-url https://127.0.0.1:29443/ --ca-cert $CA --transfers 8 --checkers 16 :http: $DEST/rclone" ;;
    lftp) echo "lftp -c 'set ssl:ca-file $CA; set cmd:fail-exit yes; mirror --delete --parallel=8 https://127.0.0.1:29443/ $DEST/lftp'" ;;
  esac
}
seconds() { local t0 t1; t0=$(date +%s%N); eval "$1"; t1=$(date +%s%N); echo "scale=2; ($t1 - $t0) / 1000000000" | bc; }

bytes=$(du -sb --apparent-size "$TREE" | cut -f1)
echo "$PROFILE over ${RTT} ms RTT, ${MBIT} Mbit/s, ${WINDOW} KiB window: floor $(echo "scale=1; $bytes * 8 / ($MBIT * 1000000)" | bc) s"
echo
echo "| tool | run | full s | no-op s |"
echo "| --- | --- | --- | --- |"
for run in $(seq "$RUNS"); do
  for tool in $TOOLS; do
    fresh_fs "$DEST/$tool"
    full=$(seconds "$(command_of "$tool")")
    noop=$(seconds "$(command_of "$tool")")
    echo "| $tool | $run | $full | $noop |"
  done
done
