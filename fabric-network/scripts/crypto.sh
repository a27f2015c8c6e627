#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Generate the network's MSPs and TLS material (cryptogen, crypto-config.yaml) into build/crypto, then
# issue each hospital's chaincode-server TLS certificate from the hospital's TLS CA (openssl), so the
# chaincode server holds no key of the org's MSP. Usage: scripts/crypto.sh
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
require_bin cryptogen openssl

rm -rf "$CRYPTO_DIR"
mkdir -p "$CRYPTO_DIR"
cryptogen generate --config="$NETWORK_DIR/crypto-config.yaml" --output="$CRYPTO_DIR"

for org in $HOSPITAL_ORGS; do
  domain="$(org_domain "$org")"
  host="$(host_of "$(org_var CCAAS "$org")")"
  tlsca="$CRYPTO_DIR/peerOrganizations/$domain/tlsca"
  out="$CRYPTO_DIR/peerOrganizations/$domain/ccaas"
  mkdir -p "$out"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/server.key"
  chmod 600 "$out/server.key"
  openssl req -new -key "$out/server.key" -subj "/O=$org/OU=chaincode/CN=$host" -out "$out/server.csr"
  extensions="$out/server.ext"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' \
    "$host" > "$extensions"
  openssl x509 -req -in "$out/server.csr" -CA "$tlsca/tlsca.$domain-cert.pem" -CAkey "$tlsca/priv_sk" \
    -CAcreateserial -days 365 -sha256 -extfile "$extensions" -out "$out/server.crt"
  # The peers' TLS client certificates come from the same TLS CA: that is whom the server accepts.
  cp "$tlsca/tlsca.$domain-cert.pem" "$out/client-ca.crt"
  rm -f "$out/server.csr" "$extensions"
  log "chaincode server TLS certificate for $host"

  # The org's Fabric CA home: its configuration and the org's root CA, so enrolled identities validate.
  ca_home="$BUILD_DIR/fabric-ca/$org"
  mkdir -p "$ca_home/ca"
  cp "$NETWORK_DIR/fabric-ca/$org/fabric-ca-server-config.yaml" "$ca_home/"
  cp "$CRYPTO_DIR/peerOrganizations/$domain/ca/ca.$domain-cert.pem" "$CRYPTO_DIR/peerOrganizations/$domain/ca/priv_sk" \
    "$ca_home/ca/"
  chmod 600 "$ca_home/ca/priv_sk"
done
log "crypto material in $CRYPTO_DIR"
