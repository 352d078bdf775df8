#!/bin/sh
# upmirror-s3-follow ENDPOINT BUCKET PREFIX INCLUDE: point an nginx front of
# nginx/upmirror-s3.conf at the snapshot PREFIX/current.json names. Reads
# the pointer (unsigned, as the front reads objects), checks every id in it
# is a snapshot id, and only when it differs from INCLUDE writes INCLUDE
# anew (one rename) and reloads nginx. Exits 0 when nothing changed or the
# reload was asked; 1 (INCLUDE untouched) on any failure.
set -eu
[ $# -eq 4 ] || { echo "usage: upmirror-s3-follow ENDPOINT BUCKET PREFIX INCLUDE" >&2; exit 2; }
endpoint=${1%/} bucket=$2 prefix=${3%/} include=$4
pointer=$(curl -sSf --max-time 20 --max-filesize 65536 "$endpoint/$bucket/$prefix/current.json") || {
  echo "upmirror-s3-follow: could not read $endpoint/$bucket/$prefix/current.json" >&2; exit 1; }
rendered=$(printf '%s' "$pointer" | python3 -c '
import json, re, sys
doc = json.load(sys.stdin)
ok = re.compile(r"^[0-9]{8}T[0-9]{6}Z(-[0-9a-f]{12}|-[0-9]+)?$")
ids = [doc["snapshot"]] + list(doc.get("grace", []))[:3]
if doc.get("format") != "upmirror-pointer/1" or not all(isinstance(i, str) and ok.match(i) for i in ids):
    sys.exit("not an upmirror-pointer/1 of snapshot ids")
ids += [""] * (4 - len(ids))
print("# written by upmirror-s3-follow from current.json; do not edit")
print("set $upmirror_snapshot \"%s\";" % ids[0])
for n in (1, 2, 3):
    print("set $upmirror_grace%d \"%s\";" % (n, ids[n]))
') || { echo "upmirror-s3-follow: $endpoint/$bucket/$prefix/current.json: not a pointer" >&2; exit 1; }
if [ -f "$include" ] && [ "$(cat "$include")" = "$rendered" ]; then exit 0; fi
printf '%s\n' "$rendered" > "$include.tmp"
mv "$include.tmp" "$include"
${UPMIRROR_NGINX_RELOAD:-nginx -s reload}
