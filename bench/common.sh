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
