#!/usr/bin/env bash
# Delta transfer at size: for two release builds of this very binary
# ($OLD_REV, default 20 commits back, and HEAD) and a 64 MiB disk image with
# 1 % of its 64 KiB blocks rewritten: the whole file, zstd-compressed whole,
# the patch, the time and peak memory to make it and to apply it.
#
#   bench/delta.sh           # ~5 min on 2 cores (one extra release build)
#   OLD_REV=HEAD~40 bench/delta.sh
# Needs: apt-get install -y zstd time python3
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV=${OLD_REV:-HEAD~20}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/old-tree" 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release --quiet
cp target/release/upmirror "$work/upmirror.new"
git worktree add --quiet --detach "$work/old-tree" "$OLD_REV"
(cd "$work/old-tree" && CARGO_TARGET_DIR="$work/old-target" cargo build --release --quiet)
cp "$work/old-target/release/upmirror" "$work/upmirror.old"
python3 - "$work" <<'PY'
import random, sys
r = random.Random(7)
img = bytearray(r.randbytes(64 << 20))
open(f"{sys.argv[1]}/disk.old", "wb").write(img)
for n in range(10):
    at = (n * 97 % 1024) << 16
    img[at:at + 65536] = r.randbytes(65536)
open(f"{sys.argv[1]}/disk.new", "wb").write(img)
PY
cargo bench --quiet --bench delta -- make /dev/null /dev/null /dev/null >/dev/null 2>&1 || true
bin=$(ls -t target/release/deps/delta-* | grep -v '\.d$' | head -1)
echo "| file | whole | zstd -3 whole | patch | make s | make peak MiB | apply s | apply peak MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for pair in "upmirror binary ($OLD_REV → HEAD):upmirror.old:upmirror.new" "64 MiB image, 1 % changed:disk.old:disk.new"; do
  IFS=: read -r label old new <<< "$pair"
  whole=$(stat -c %s "$work/$new")
  packed=$(zstd -q -3 -c "$work/$new" | wc -c)
  /usr/bin/time -f '%e %M' -o "$work/t.make" "$bin" make "$work/$old" "$work/$new" "$work/patch" >/dev/null
  /usr/bin/time -f '%e %M' -o "$work/t.apply" "$bin" apply "$work/$old" "$work/patch" "$work/out" >/dev/null
  cmp -s "$work/out" "$work/$new" || { echo "bench/delta.sh: $label: the patch did not make the new file" >&2; exit 1; }
  read -r ms mk < "$work/t.make"; read -r as ak < "$work/t.apply"
  printf '| %s | %.2f MB | %.2f MB | %.2f MB (%.1f %%) | %.2f | %.0f | %.2f | %.0f |\n' "$label" \
    "$(echo "$whole / 1000000" | bc -l)" "$(echo "$packed / 1000000" | bc -l)" \
    "$(echo "$(stat -c %s "$work/patch") / 1000000" | bc -l)" "$(echo "100 * $(stat -c %s "$work/patch") / $whole" | bc -l)" \
    "$ms" "$(echo "$mk / 1024" | bc -l)" "$as" "$(echo "$ak / 1024" | bc -l)"
done
