#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Deploy the ciphercare contracts through the chaincode lifecycle: package (ccaas: connection.json +
# metadata.json), install on every peer, start each hospital's chaincode server with the package id,
# approve the definition of chaincode/definitions.env ("ciphercare": every contract, one state namespace)
# for every hospital, commit, and write the connection profiles ciphercare reads.
# Usage: scripts/deploy-chaincode.sh native|compose   (CC_SEQUENCE=n for an upgrade)
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=../chaincode/definitions.env
source "$NETWORK_DIR/chaincode/definitions.env"
require_bin peer tar

mode="${1:?usage: deploy-chaincode.sh native|compose}"
case "$mode" in native | compose) ;; *) die "mode must be native or compose, not $mode" ;; esac

# 1. package: metadata.json + code.tar.gz holding connection.json (a template: no address, no keys)
pkg="$ARTIFACTS_DIR/$CC_LABEL.tar.gz"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$ARTIFACTS_DIR"
cp "$NETWORK_DIR/chaincode/connection.json" "$work/connection.json"
tar -C "$work" -czf "$work/code.tar.gz" connection.json
cp "$NETWORK_DIR/chaincode/metadata.json" "$work/metadata.json"
tar -C "$work" -czf "$pkg" metadata.json code.tar.gz
package_id="$(peer lifecycle chaincode calculatepackageid "$pkg")"
log "package $pkg: $package_id"

# 2. install on every peer
for org in $HOSPITAL_ORGS; do
  for endpoint in $(org_var PEERS "$org"); do
    as_org_admin "$org" "$endpoint"
    peer lifecycle chaincode install "$pkg"
  done
done

# 3. each hospital's chaincode server, registered under the package id
if [ "$mode" = "native" ]; then
  run="$BUILD_DIR/native"
  mkdir -p "$run"
  for org in $HOSPITAL_ORGS; do
    ccaas="$(org_var CCAAS "$org")"
    dir="$CRYPTO_DIR/peerOrganizations/$(org_domain "$org")/ccaas"
    env CHAINCODE_ID="$package_id" CHAINCODE_SERVER_ADDRESS="127.0.0.1:$(port_of "$ccaas")" \
      CHAINCODE_TLS_KEY="$dir/server.key" CHAINCODE_TLS_CERT="$dir/server.crt" \
      CHAINCODE_CLIENT_CA_CERT="$dir/client-ca.crt" \
      "${CIPHERCARE_BIN:-ciphercare}" chaincode serve >"$run/ccaas.$org.log" 2>&1 &
    printf '%s\n' "$!" >"$run/ccaas.$org.pid"
    log "chaincode server for $org on $ccaas (pid $!)"
  done
else
  read -r -a compose <<<"${COMPOSE:-docker compose}"
  CHAINCODE_ID="$package_id" "${compose[@]}" -f "$NETWORK_DIR/compose/compose.yaml" --profile chaincode \
    up -d --build "ccaas.hospital-a" "ccaas.hospital-b"
fi

# 4. approve every definition for every hospital, then commit it
orderer="$(printf '%s\n' "$ORDERERS" | cut -d' ' -f1)"
orderer_args=(-o "$orderer" --ordererTLSHostnameOverride "$(host_of "$orderer")" --tls --cafile "$(orderer_ca)")
commit_peers=()
for org in $HOSPITAL_ORGS; do
  first="$(org_var PEERS "$org" | cut -d' ' -f1)"
  commit_peers+=(--peerAddresses "$first" --tlsRootCertFiles "$(peer_tls_dir "$org" "$(host_of "$first")")/ca.crt")
done
for name in $CC_DEFINITIONS; do
  policy_var="CC_POLICY_$name"
  policy="${!policy_var:?no endorsement policy for $name in definitions.env}"
  definition=(--channelID "$CHANNEL_NAME" --name "$name" --version "$CC_VERSION" --sequence "$CC_SEQUENCE"
    --signature-policy "$policy")
  for org in $HOSPITAL_ORGS; do
    as_org_admin "$org" "$(org_var PEERS "$org" | cut -d' ' -f1)"
    peer lifecycle chaincode approveformyorg "${orderer_args[@]}" "${definition[@]}" --package-id "$package_id"
  done
  peer lifecycle chaincode checkcommitreadiness "${definition[@]}" --output json
  peer lifecycle chaincode commit "${orderer_args[@]}" "${definition[@]}" "${commit_peers[@]}"
  peer lifecycle chaincode querycommitted --channelID "$CHANNEL_NAME" --name "$name"
  log "chaincode definition $name committed with $policy"
done

# 5. what ciphercare reads
"$NETWORK_DIR/scripts/connection-profile.sh"
