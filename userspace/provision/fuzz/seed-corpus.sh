#!/bin/sh
# Seeds corpus/request and corpus/signature (see README.md). Needs ssh-keygen.
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/request corpus/signature
keys=$(mktemp -d)
trap 'rm -rf "$keys"' EXIT
empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
example=../../../examples/config.toml
printf 'GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n' > corpus/request/health
printf 'GET /api/nonce HTTP/1.1\r\nHost: x\r\n\r\nGET /api/jobs/abc HTTP/1.1\r\nHost: x\r\n\r\n' > corpus/request/pipelined
{ printf 'POST /api/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/toml\r\nContent-Length: %d\r\n\r\n' "$(wc -c < "$example")"; cat "$example"; } > corpus/request/validate
printf 'POST /api/config HTTP/1.1\r\nHost: x\r\nContent-Type: application/toml\r\nContent-Length: 5\r\nExpect: 100-continue\r\nX-Atomix-Nonce: 00\r\nX-Atomix-Content-SHA256: %s\r\nX-Atomix-Signature: AAAA\r\n\r\nabcde' "$empty" > corpus/request/config
printf 'POST /api/update?reboot=true HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nX-Atomix-Nonce: 00\r\nX-Atomix-Content-SHA256: %s\r\nX-Atomix-Signature: AAAA\r\n\r\n5\r\nhello\r\n0\r\n\r\n' "$empty" > corpus/request/update
printf 'GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /console.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' > corpus/request/console
for t in ed25519 ecdsa rsa; do
    ssh-keygen -q -N "" -t "$t" -f "$keys/$t"
    printf 'atomix-provision\n00ff\n%s\n' "$empty" | ssh-keygen -q -Y sign -n atomix-provision -f "$keys/$t" > "$keys/$t.sig"
    { printf '\002'; grep -v "SSH SIGNATURE" "$keys/$t.sig" | base64 -d; } > "corpus/signature/blob-$t"
    { printf '\001'; base64 -w0 "$keys/$t.sig"; } > "corpus/signature/header-$t"
    { printf '\003'; cat "$keys/$t.pub"; } > "corpus/signature/keys-$t"
    { printf '\000x-atomix-nonce: 00ff\nx-atomix-content-sha256: %s\nx-atomix-signature: ' "$empty"; base64 -w0 "$keys/$t.sig"; } > "corpus/signature/headers-$t"
done
