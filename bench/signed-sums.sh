#!/usr/bin/env bash
# The cost of trusting a big signed SHA256SUMS: gpg makes a key, a
# SHA256SUMS of $LINES lines (default 100,000), its detached signature and a
# clearsigned copy; `cargo bench --bench signed_sums` times the checks.
#
#   bench/signed-sums.sh           # needs: apt-get install -y gpg gpg-agent
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${LINES:-100000}
work=$(mktemp -d)
trap 'gpgconf --homedir "$work/gnupg" --kill gpg-agent 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -m 700 "$work/gnupg"
g() { gpg --homedir "$work/gnupg" --batch --yes --pinentry-mode loopback --passphrase '' "$@"; }
g --quick-gen-key 'Bench <bench@example.org>' ed25519 sign 0 2>/dev/null
g --output "$work/keyring.gpg" --export bench@example.org
python3 - "$LINES" > "$work/SHA256SUMS" <<'PY'
import hashlib, sys
for i in range(int(sys.argv[1])):
    print(f"{hashlib.sha256(str(i).encode()).hexdigest()}  pool/main/p/pkg{i:06d}/pkg{i:06d}_1.0-1_amd64.deb")
PY
g --local-user bench@example.org --output "$work/SHA256SUMS.gpg" --detach-sign "$work/SHA256SUMS" 2>/dev/null
g --local-user bench@example.org --output "$work/SHA256SUMS.clear" --clearsign "$work/SHA256SUMS" 2>/dev/null
cargo bench --quiet --bench signed_sums -- "$work/keyring.gpg" "$work/SHA256SUMS" "$work/SHA256SUMS.gpg" "$work/SHA256SUMS.clear"
