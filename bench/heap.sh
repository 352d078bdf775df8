#!/usr/bin/env bash
# Where the memory of a full sync goes: heaptrack on the profiling build
# (the release build with debug info) syncing the kit's tree (crawled from
# its JSON listings) on loopback into an empty root; prints the peak heap,
# the peak heap grouped by the innermost frame of upmirror or of the HTTP
# stack, and the peak RSS of an uninstrumented run with its anonymous and
# file-backed parts (the binary's own pages).
#
#   bench/heap.sh                     # profile small; needs: apt-get install -y heaptrack nginx
#   PROFILE=many ARGS="--http2 false" bench/heap.sh
source "$(dirname "$0")/common.sh"
PROFILE=${PROFILE:-small}
cargo build --profile profiling --quiet
PROF=$PWD/target/profiling/upmirror
TREE=$BENCH_DIR/trees/$PROFILE/base
[ -d "$TREE" ] || python3 "$KIT/gen-tree.py" generate "$PROFILE" "$TREE" >/dev/null
"$KIT/upstream.sh" start "$TREE" >/dev/null
trap '"$KIT/upstream.sh" stop >/dev/null' EXIT
D=$BENCH_DIR/dest/heap
args=(sync --quiet ${ARGS:-} --upstream https://127.0.0.1:18444/ --ca-file "$CA" --root "$D")

rm -rf "$D" "$BENCH_DIR/heap.zst"
heaptrack -o "$BENCH_DIR/heap" "$PROF" "${args[@]}" >/dev/null 2>&1
heaptrack_print -f "$BENCH_DIR/heap.zst" --print-flamegraph "$BENCH_DIR/heap.stacks" \
  --flamegraph-cost-type peak 2>/dev/null | grep -E "^peak heap memory"
python3 - "$BENCH_DIR/heap.stacks" <<'EOF'
import collections, re, sys
peak = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    frames = stack.split(";")
    ours = [f for f in frames if f.startswith("upmirror::")]
    http = [f for f in frames if re.match(r"(h2|hyper|hyper_util|reqwest|rustls)::", f)]
    frame = (ours or http or ["(elsewhere)"])[-1]
    for code, char in (("$LT$", "<"), ("$GT$", ">"), ("$C$", ","), ("$u7b$", "{"), ("$u7d$", "}"), ("$u20$", " ")):
        frame = frame.replace(code, char)
    peak[re.sub(r"::h[0-9a-f]{16}.*| \(.*", "", frame)[:100]] += int(n)
for frame, n in peak.most_common(8):
    print(f"{n / 1048576:7.2f} MiB  {frame}")
EOF

rm -rf "$D"
"$BIN" "${args[@]}" &
pid=$!
best=0 at=""
while kill -0 "$pid" 2>/dev/null; do
  now=$(grep -E "^(VmRSS|RssAnon|RssFile)" "/proc/$pid/status" 2>/dev/null | tr -s ' \t\n' ' ') || true
  rss=$(sed -n 's/.*VmRSS: \([0-9]*\).*/\1/p' <<<"$now")
  if [ -n "$rss" ] && [ "$rss" -gt "$best" ]; then best=$rss at=$now; fi
done
wait "$pid"
echo "peak RSS without heaptrack (KiB): $at"
