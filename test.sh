#!/usr/bin/env bash
# Every test: installs what the integration tests need when it is missing
# (Debian 12, as root), then runs the whole suite. The tests start real
# nginx, Apache, lighttpd, Caddy, rclone, webfs, h2o, mini_httpd, npm's
# http-server and serve, and python servers, a
# tinyproxy (behind stunnel for a TLS proxy), HAProxy in front of a
# three-host fleet, a single-node Ceph RGW (S3: mon, memstore OSD, radosgw), a FUSE case-insensitive file
# system, verify the systemd units with systemd-analyze, render the
# status page in headless Chromium, make certificates and mount tmpfs, and
# run real apt against a repository built with apt-ftparchive, and sign
# with real gpg and minisign.
set -euo pipefail
cd "$(dirname "$0")"

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
for pair in nginx:nginx chromium:chromium openssl:openssl python3:python3 \
            systemd-analyze:systemd mount:mount apt-ftparchive:apt-utils xz:xz-utils \
            dpkg-deb:dpkg mkfifo:coreutils tinyproxy:tinyproxy minisign:minisign \
            apache2:apache2 lighttpd:lighttpd caddy:caddy rclone:rclone webfsd:webfs \
            stunnel4:stunnel4 unshare:util-linux getent:libc-bin gpg:gpg gpg-agent:gpg-agent \
            h2o:h2o mini_httpd:mini-httpd npm:npm haproxy:haproxy curl:curl setpriv:util-linux busybox:busybox \
            ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw ceph:ceph-common; do
  have "${pair%%:*}" || need+=("${pair##*:}")
done
# The case-insensitive file system of a test is a FUSE one in Python.
/usr/bin/python3 -c 'import fusepy' 2>/dev/null || need+=(python3-fusepy)
# Time zones with daylight saving, for a server's local-time listing.
[ -e /usr/share/zoneinfo/America/New_York ] || need+=(tzdata)
# nginx's fancyindex is a module of its own package.
[ -e /usr/lib/nginx/modules/ngx_http_fancyindex_module.so ] || need+=(libnginx-mod-http-fancyindex)
# lighttpd's TLS is a module of its own package.
[ -e /usr/lib/lighttpd/mod_openssl.so ] || need+=(lighttpd-mod-openssl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing ${need[*]}; run as root, or: apt-get install ${need[*]}" >&2
    exit 2
  fi
  echo "test.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The servers' packages must not start their daemons on port 80: the tests
  # start their own, on free ports.
  policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ]; then
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    rm -f "$policy"
    trap - EXIT
  fi
fi
# npm's http-server and serve, pinned, from the npm registry.
if ! command -v http-server >/dev/null || ! command -v serve >/dev/null; then
  [ "$(id -u)" -eq 0 ] || { echo "test.sh: missing http-server, serve; run as root, or: npm install -g http-server@14.1.1 serve@14.2.7" >&2; exit 2; }
  echo "test.sh: installing http-server and serve (npm)" >&2
  npm install -g --silent --no-audit --no-fund http-server@14.1.1 serve@14.2.7 >/dev/null
fi

cargo test --locked "$@"
