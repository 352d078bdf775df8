# Sourced by the bench scripts: the kit, its nginx's CA and log, the
# release binary, and kit trees with a manifest.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-$(cd ../shared/bench && pwd)}
export BENCH_DIR=${BENCH_DIR:-/tmp/upmirror-bench}
cargo build --release --quiet
BIN=$PWD/target/release/upmirror
CA=$BENCH_DIR/pki/ca.crt
LOG=$BENCH_DIR/nginx/logs/access.log

# kit_tree PROFILE NAME: the kit's PROFILE tree with an upmirror manifest,
# made once under $BENCH_DIR/trees/PROFILE/NAME; prints its path.
kit_tree() {
  local t=$BENCH_DIR/trees/$1/$2
  if [ ! -e "$t/upmirror-manifest.json" ]; then
    rm -rf "$t"
    python3 "$KIT/gen-tree.py" generate "$1" "$t" >/dev/null
    "$BIN" manifest --quiet "$t"
  fi
  echo "$t"
}

# fresh_fs DIR [INODES]: an empty ext4 file system of its own (a sparse
# 16 GiB image on a loop device) mounted at DIR; needs root. ext4 allocates
# inodes slowly for a while after many files were deleted
# (`recently_deleted`), which a deleted earlier run would otherwise charge
# to whichever tool writes next.
fresh_fs() {
  local dir=$1 img=$1.img
  if mountpoint -q "$dir"; then umount "$dir"; fi
  rm -rf "$dir" "$img"
  mkdir -p "$dir"
  truncate -s 16G "$img"
  mkfs.ext4 -q -F ${2:+-N "$2"} -E lazy_itable_init=0,lazy_journal_init=0 "$img"
  mount -o loop "$img" "$dir"
}
