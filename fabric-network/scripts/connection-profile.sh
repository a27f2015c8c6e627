#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Write one connection profile per hospital (build/connection-profiles/<org>.json): Fabric's common
# connection profile (organizations, peers with their TLS CA, the channel) plus an "x-ciphercare"
# section: the channel, the gateway peer of the org, its MSP id, and the chaincode definition that
# serves each contract (all of them: "ciphercare", chaincode/definitions.env). This is what a hospital's
# ciphercare node is configured from.
# Usage: scripts/connection-profile.sh
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=../chaincode/definitions.env
source "$NETWORK_DIR/chaincode/definitions.env"

for org in $HOSPITAL_ORGS; do  # every TLS CA first: a profile is written whole or not at all
  for endpoint in $(org_var PEERS "$org"); do
    ca="$(peer_tls_dir "$org" "$(host_of "$endpoint")")/ca.crt"
    [ -r "$ca" ] || die "cannot read $ca (run scripts/crypto.sh first)"
  done
done
mkdir -p "$PROFILE_DIR"
for client_org in $HOSPITAL_ORGS; do
  out="$PROFILE_DIR/$client_org.json"
  client_msp="$(org_var ORG_MSP "$client_org")"
  gateway="$(org_var PEERS "$client_org" | cut -d' ' -f1)"
  {
    printf '{\n  "name": "ciphercare-%s",\n  "version": "1.0.0",\n' "$client_org"
    printf '  "client": {"organization": "%s", "connection": {"timeout": {"peer": {"endorser": "30"}}}},\n' \
      "$client_msp"
    printf '  "organizations": {\n'
    sep=""
    for org in $HOSPITAL_ORGS; do
      names=""
      for endpoint in $(org_var PEERS "$org"); do
        names="$names${names:+, }\"$(host_of "$endpoint")\""
      done
      printf '%s    "%s": {"mspid": "%s", "peers": [%s]}' "$sep" "$(org_var ORG_MSP "$org")" \
        "$(org_var ORG_MSP "$org")" "$names"
      sep=$',\n'
    done
    printf '\n  },\n  "peers": {\n'
    sep=""
    for org in $HOSPITAL_ORGS; do
      for endpoint in $(org_var PEERS "$org"); do
        host="$(host_of "$endpoint")"
        printf '%s    "%s": {"url": "grpcs://%s", "tlsCACerts": {"pem": "%s"}, "grpcOptions": {"ssl-target-name-override": "%s"}}' \
          "$sep" "$host" "$endpoint" "$(pem_json "$(peer_tls_dir "$org" "$host")/ca.crt")" "$host"
        sep=$',\n'
      done
    done
    printf '\n  },\n  "channels": {"%s": {"peers": {' "$CHANNEL_NAME"
    sep=""
    for org in $HOSPITAL_ORGS; do
      for endpoint in $(org_var PEERS "$org"); do
        printf '%s"%s": {"endorsingPeer": true, "chaincodeQuery": true, "ledgerQuery": true, "eventSource": true}' \
          "$sep" "$(host_of "$endpoint")"
        sep=", "
      done
    done
    printf '}}},\n'
    printf '  "x-ciphercare": {"channel": "%s", "mspId": "%s", "gatewayPeer": "%s", "chaincodes": {' \
      "$CHANNEL_NAME" "$client_msp" "$(host_of "$gateway")"
    sep=""
    for name in $CC_DEFINITIONS; do
      contracts_var="CC_CONTRACTS_$name"
      for contract in ${!contracts_var:?no contracts for $name in definitions.env}; do
        printf '%s"%s": "%s"' "$sep" "$contract" "$name"
        sep=", "
      done
    done
    printf '}}\n}\n'
  } >"$out"
  log "connection profile for $client_org: $out"
done
