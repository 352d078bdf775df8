#!/bin/sh
# A lab certificate for the mirror: a small CA of its own and a server
# certificate signed by it (CA:FALSE, serverAuth, the name as subjectAltName),
# which rustls-based clients — a second-tier upmirror among them — accept.
# Never for production: use your organisation's CA there.
#
#   nginx/lab-tls.sh NAME [DIR]      NAME: the mirror's DNS name or IP address
#                                    DIR:  default /etc/ssl/upmirror
# Writes DIR/mirror.crt and DIR/mirror.key for nginx, and DIR/lab-ca.pem,
# the CA that clients pin (ca_file = ".../lab-ca.pem" on a second tier).
set -eu
name=${1:?usage: lab-tls.sh NAME [DIR]}
dir=${2:-/etc/ssl/upmirror}
mkdir -p "$dir"
umask 077
case $name in
  *[!0-9.]*) san="DNS:$name" ;;
  *) san="IP:$name" ;;
esac
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -days 3650 -subj "/CN=upmirror lab CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$dir/lab-ca.key" -out "$dir/lab-ca.pem" 2>/dev/null
openssl req $ec -subj "/CN=$name" -keyout "$dir/mirror.key" -out "$dir/mirror.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
  "$san" > "$dir/mirror.ext"
openssl x509 -req -in "$dir/mirror.csr" -CA "$dir/lab-ca.pem" -CAkey "$dir/lab-ca.key" -CAcreateserial \
  -days 825 -extfile "$dir/mirror.ext" -out "$dir/mirror.crt" 2>/dev/null
rm -f "$dir/mirror.csr" "$dir/mirror.ext" "$dir/lab-ca.srl"
chmod 644 "$dir/lab-ca.pem" "$dir/mirror.crt"
echo "wrote $dir/mirror.crt and $dir/mirror.key (for nginx) and $dir/lab-ca.pem (for clients to pin)"
