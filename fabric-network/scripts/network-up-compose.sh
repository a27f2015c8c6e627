#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start the network in containers (compose/compose.yaml; docker compose or podman compose), create the
# channel and join everyone. The channel tools (configtxgen, osnadmin, peer) run from the host's PATH.
# Usage: [CONSENSUS=raft|bft] [COMPOSE="podman compose"] scripts/network-up-compose.sh
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
require_bin configtxgen osnadmin peer cryptogen openssl
read -r -a compose <<<"${COMPOSE:-docker compose}"
require_bin "${compose[0]}"
check_hosts
engine="${compose[0]}"

if [ "$CONSENSUS" = "bft" ]; then
  export FABRIC_VERSION="$FABRIC_BFT_VERSION"   # V3_0 channel capability: every node on Fabric 3
fi
export FABRIC_ORDERER_VERSION="$FABRIC_VERSION"
[ -d "$CRYPTO_DIR" ] || "$NETWORK_DIR/scripts/crypto.sh"

# Fabric's core.yaml from the peer image, plus ciphercare's external builder.
mkdir -p "$BUILD_DIR/config"
"$engine" run --rm --entrypoint cat "hyperledger/fabric-peer:$FABRIC_VERSION" /etc/hyperledger/fabric/core.yaml \
  >"$BUILD_DIR/config/core.base.yaml"
write_peer_config "$BUILD_DIR/config/core.base.yaml" /opt/ciphercare/builders/ccaas

profiles=()
[ "$CONSENSUS" = "bft" ] && profiles=(--profile bft)
"${compose[@]}" -f "$NETWORK_DIR/compose/compose.yaml" "${profiles[@]}" up -d
sleep 5
"$NETWORK_DIR/scripts/channel.sh"
log "network up (containers, $CONSENSUS); next: scripts/deploy-chaincode.sh compose"
