#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Create the channel "ciphercare" (configtx.yaml profile CiphercareRaft or CiphercareBFT), join every
# orderer through the channel participation API (osnadmin) and every peer (peer channel join).
# Usage: [CONSENSUS=raft|bft] scripts/channel.sh
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
require_bin configtxgen osnadmin peer

case "$CONSENSUS" in
  raft) profile=CiphercareRaft ;;
  bft) profile=CiphercareBFT ;;
  *) die "CONSENSUS must be raft or bft, not $CONSENSUS" ;;
esac
mkdir -p "$ARTIFACTS_DIR"
block="$ARTIFACTS_DIR/$CHANNEL_NAME.block"
configtxgen -configPath "$NETWORK_DIR" -profile "$profile" -channelID "$CHANNEL_NAME" -outputBlock "$block"

for endpoint in $(active_orderers); do
  host="$(host_of "$endpoint")"
  tls="$(orderer_tls_dir "$host")"
  admin="$host:$(( $(port_of "$endpoint") + ORDERER_ADMIN_OFFSET ))"
  osnadmin channel join --channelID "$CHANNEL_NAME" --config-block "$block" -o "$admin" \
    --ca-file "$(orderer_ca)" --client-cert "$tls/server.crt" --client-key "$tls/server.key"
  log "$host joined $CHANNEL_NAME"
done

for org in $HOSPITAL_ORGS; do
  for endpoint in $(org_var PEERS "$org"); do
    as_org_admin "$org" "$endpoint"
    attempt=1
    until peer channel join -b "$block"; do
      [ "$attempt" -ge 5 ] && die "$endpoint could not join $CHANNEL_NAME"
      attempt=$((attempt + 1))
      sleep 2
    done
    log "$endpoint joined $CHANNEL_NAME"
  done
done
