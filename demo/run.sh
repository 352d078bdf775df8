#!/usr/bin/env bash
# The built-in demo: makes a sample upstream tree, serves it over local HTTPS
# (a CA made here, python3's http.server behind TLS on 127.0.0.1), syncs it into
# a temporary mirror root, changes the upstream, shows the dry-run plan, syncs
# again and prints what was published. Needs cargo, python3 and openssl.
#
#   demo/run.sh            # everything under a fresh temp dir, removed at the end
#   KEEP=1 demo/run.sh     # keep the temp dir to look around
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet
bin=$PWD/target/debug/upmirror
work=$(mktemp -d /tmp/upmirror-demo.XXXXXX)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a sample upstream tree in $work/upstream"
up=$work/upstream
mkdir -p "$up/releases/11.2" "$up/pool/main" "$up/docs"
head -c $((3 << 20)) /dev/urandom > "$up/releases/11.2/core.zip"
for i in $(seq -w 1 40); do head -c $((RANDOM * 4)) /dev/urandom > "$up/pool/main/pkg-$i.deb"; done
echo '{"version":"11.2"}' > "$up/releases/current.json"
echo 'dotfiles are mirrored too' > "$up/.treeinfo"
echo 'names with spaces & #marks' > "$up/docs/read me #1.txt"
"$bin" manifest "$up"

step "a private CA and a server certificate for 127.0.0.1"
pki=$work/pki; mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=demo CA" \
  -keyout "$pki/ca.key" -out "$pki/ca.pem" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$pki/ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
  -extfile "$pki/ext" -out "$pki/server.pem" 2>/dev/null
echo "CA: $pki/ca.pem (pinned with --ca-file)"

step "serving the upstream over HTTPS"
python3 - "$up" "$pki" "$work/port" 2>"$work/server.log" <<'PY' &
import functools, http.server, ssl, sys
root, pki, port_file = sys.argv[1:]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(f"{pki}/server.pem", f"{pki}/server.key")
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
open(port_file + ".tmp", "w").write(str(httpd.server_address[1]))
__import__("os").rename(port_file + ".tmp", port_file)
httpd.serve_forever()
PY
server_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
url="https://127.0.0.1:$(cat "$work/port")/"
echo "upstream: $url"

# Everything from the environment; no config file of this host is read.
export UPMIRROR_CONFIG=/dev/null UPMIRROR_ROOT=$work/mirror UPMIRROR_UPSTREAMS=$url UPMIRROR_CA_FILE=$pki/ca.pem
step "upmirror sync --dry-run (first run: everything is new)"
"$bin" sync --dry-run | tail -n 4
step "upmirror sync"
time "$bin" sync
step "upmirror sync again: one conditional request, nothing to do"
"$bin" sync

step "the upstream changes: a new release, an edited file, a removed package"
head -c $((1 << 20)) /dev/urandom > "$up/releases/11.2/core-hotfix.zip"
echo '{"version":"11.2.1"}' > "$up/releases/current.json"
rm "$up/pool/main/pkg-07.deb"
sleep 1   # the upstream's Last-Modified has one-second resolution
"$bin" manifest "$up"
step "upmirror sync --dry-run"
"$bin" sync --dry-run
step "upmirror sync"
"$bin" sync

step "what is published in $work/mirror"
ls -l "$work/mirror" "$work/mirror/snapshots"
(cd "$work/mirror/current" && find . -type f | sort | head -n 12 && echo "… $(find . -type f | wc -l) files")
echo "unchanged files are hardlinked between snapshots (link counts):"
stat -c '%h %n' "$work"/mirror/snapshots/*/pool/main/pkg-01.deb
step "status"
cat "$work/mirror/.upmirror/status.json"; echo
