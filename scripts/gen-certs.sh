#!/usr/bin/env bash
# Development certificates and keys for speech-gateway (NOT for production: the CA key
# sits next to the certificates, unencrypted).
#
#   bash scripts/gen-certs.sh [--out DIR] [--name DNS_OR_IP]...
#
# Writes into DIR (default certs/dev):
#   ca.pem ca.key            a development CA (10 years)
#   server.pem server.key    a server certificate signed by the CA, for the gateway's
#                            listener (tls.cert / tls.key) or a back end (Riva, Triton)
#   client.pem client.key    a client certificate signed by the CA, for mTLS to back ends
#                            (backend_tls.cert / backend_tls.key)
#   jwt-hs256.secret         a random 48-byte HS256 secret (auth.hs256_secret_file)
#   jwt-rs256.key/.pub       an RSA 2048 key pair (auth.public_keys gets the .pub)
#   jwt-es256.key/.pub       a P-256 key pair (auth.public_keys gets the .pub)
# The server certificate names localhost, 127.0.0.1 and ::1, plus every --name.
# Existing files are replaced. Needs openssl (Debian package openssl).
set -euo pipefail

out="certs/dev"
names=()
while (($#)); do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --name) names+=("${2:?--name needs a DNS name or IP}"); shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gen-certs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null 2>&1 || {
  echo "gen-certs.sh: openssl not found (apt-get install openssl)" >&2
  exit 1
}
mkdir -p "$out"
cd "$out"

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for n in "${names[@]+"${names[@]}"}"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+=",IP:$n"; else san+=",DNS:$n"; fi
done

quiet() { "$@" 2>/dev/null; }

quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout ca.key -out ca.pem -days 3650 -subj "/CN=speech-gateway development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

issue() { # name, subject CN, extended key usage, extra extensions
  local name=$1 cn=$2 eku=$3 ext=$4
  quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' \
    "$eku" "$ext" >"$name.ext"
  quiet openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$name.pem" -days 825 -sha256 -extfile "$name.ext"
  rm -f "$name.csr" "$name.ext"
}
issue server "speech-gateway development server" serverAuth "subjectAltName=$san"
issue client "speech-gateway development client" clientAuth ""
rm -f ca.srl

openssl rand -base64 48 | tr -d '\n' >jwt-hs256.secret
quiet openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out jwt-rs256.key
openssl pkey -in jwt-rs256.key -pubout -out jwt-rs256.pub 2>/dev/null
quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out jwt-es256.key
openssl pkey -in jwt-es256.key -pubout -out jwt-es256.pub 2>/dev/null
chmod 600 ./*.key jwt-hs256.secret

echo "gen-certs.sh: wrote $(pwd): ca.pem server.pem/.key client.pem/.key jwt-* (server names: $san)"
