#!/usr/bin/env bash
# Publishing to a bucket: a real single-node Ceph RGW (mon, memstore OSD,
# radosgw on 127.0.0.1, as tests/it/support/rgw.rs starts it) and the kit's
# tree with a manifest behind the kit's nginx. A first sync publishes the
# tree to the bucket (every file uploaded), then 1 % of the files change and
# a second sync publishes again (those uploaded, the rest copied inside the
# bucket). Prints wall time of each sync (download, local publish and
# bucket publish together), objects uploaded and copied, and MiB uploaded.
#
#   bench/s3.sh                  # PROFILE=many (20,000 files); PROFILE=small
#   # needs: apt-get install -y ceph-mon ceph-osd radosgw ceph-common nginx curl bc python3
source "$(dirname "$0")/common.sh"
PROFILE=${PROFILE:-many}
T=$(kit_tree "$PROFILE" s3-bench)
"$KIT/upstream.sh" start "$T" >/dev/null
"$KIT/upstream.sh" serve "$T" >/dev/null
R=$BENCH_DIR/rgw PORT=17480 D=$BENCH_DIR/dest/s3
rm -rf "$R" "$D"; mkdir -p "$R"/{run,log,crash,mon,osd/osd.0,rgw}
cat > "$R/ceph.conf" <<CONF
[global]
fsid = 0b1d5d1e-8c1f-4a53-9a61-5d2f3c4e7a10
mon host = [v2:127.0.0.1:13300,v1:127.0.0.1:16789]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
client mount timeout = 30
paxos propose interval = 0.05
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
run dir = $R/run
admin socket = $R/run/\$name.asok
pid file = $R/run/\$name.pid
log file = $R/log/\$name.log
crash dir = $R/crash
mon data = $R/mon/\$name
osd data = $R/osd/\$name
osd objectstore = memstore
memstore device bytes = 4294967296
[mon.a]
public addrv = [v2:127.0.0.1:13300,v1:127.0.0.1:16789]
[client.rgw.0]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw thread pool size = 16
rgw data = $R/rgw
CONF
C=(-c "$R/ceph.conf")
ceph-mon "${C[@]}" -i a --mkfs >/dev/null 2>&1
ceph-mon "${C[@]}" -i a -f >"$R/log/mon.out" 2>&1 & pids=($!)
uuid=6c0d3b8e-1f2a-4b5c-9d8e-7f6a5b4c3d2e
id=$(timeout 60 ceph "${C[@]}" osd new $uuid)
timeout 60 ceph-osd "${C[@]}" -i "$id" --mkfs --osd-uuid $uuid >"$R/log/osd-mkfs.out" 2>&1
ceph-osd "${C[@]}" -i "$id" -f >"$R/log/osd.out" 2>&1 & pids+=($!)
radosgw "${C[@]}" -n client.rgw.0 -f >"$R/log/rgw.out" 2>&1 & pids+=($!)
trap 'kill "${pids[@]}" 2>/dev/null; "$KIT/upstream.sh" stop >/dev/null' EXIT
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/"; do sleep 0.1; done
timeout 60 radosgw-admin "${C[@]}" user create --uid=bench --display-name=bench --access-key=K --secret-key=S >/dev/null
curl -sf -X PUT --aws-sigv4 aws:amz:us-east-1:s3 -u K:S -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "http://127.0.0.1:$PORT/bench"
printf '[default]\naws_access_key_id = K\naws_secret_access_key = S\n' > "$BENCH_DIR/s3-credentials"

publish() {
  local t0 t1
  sync; t0=$(date +%s%N)
  "$BIN" sync --quiet --upstream https://127.0.0.1:18444/ --ca-file "$CA" --root "$D" --max-delete-percent 100 \
    --publish-to s3://bench/mirror --s3-endpoint "http://127.0.0.1:$PORT" --allow-plain-http \
    --s3-credentials-file "$BENCH_DIR/s3-credentials"
  t1=$(date +%s%N)
  python3 - "$D/.upmirror/status.json" "$1" "$(echo "($t1 - $t0) / 1000000000" | bc -l)" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); b = s["buckets"][0]; w = float(sys.argv[3])
assert not b.get("error"), b
up, mib = b["uploaded_objects"], b["uploaded_bytes"] / 1048576
print(f"| {sys.argv[2]} | {w:.2f} | {up} | {b['copied_objects']} | {mib:.1f} | {up / w:.0f} | {mib / w:.1f} |")
PY
}
files=$(find "$T" -type f ! -name 'upmirror-*' | wc -l)
echo "| $PROFILE ($files files) | wall s | uploaded | copied | MiB uploaded | uploads/s | MiB/s |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
publish "first publish"
# 1 % of the files get new bytes of the same size.
find "$T" -type f ! -name 'upmirror-*' | sort | awk -v n="$files" 'NR % 100 == 0' | while read -r f; do
  head -c "$(stat -c %s "$f")" /dev/urandom > "$f.new" && mv "$f.new" "$f"
done
"$BIN" manifest --quiet "$T"
publish "1 % changed"
rm -rf "$D"
