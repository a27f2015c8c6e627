#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start the orderers and peers from native Fabric binaries on this machine (one process each, logs and
# data under build/native), create the channel and join everyone. Needs the Fabric release's bin/ on
# PATH and FABRIC_CFG_PATH pointing at its config/ (core.yaml, orderer.yaml), and every
# *.ciphercare.example host resolving to 127.0.0.1 (the script prints the /etc/hosts lines if not).
# Usage: [CONSENSUS=raft|bft] scripts/network-up-native.sh
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
require_bin orderer peer configtxgen osnadmin cryptogen openssl
: "${FABRIC_CFG_PATH:?set FABRIC_CFG_PATH to the Fabric release config directory (core.yaml, orderer.yaml)}"
[ -f "$FABRIC_CFG_PATH/core.yaml" ] || die "no core.yaml in $FABRIC_CFG_PATH"
[ -f "$FABRIC_CFG_PATH/orderer.yaml" ] || die "no orderer.yaml in $FABRIC_CFG_PATH"
RELEASE_CFG="$FABRIC_CFG_PATH"

check_hosts
[ -d "$CRYPTO_DIR" ] || "$NETWORK_DIR/scripts/crypto.sh"
run="$BUILD_DIR/native"
mkdir -p "$run"
write_peer_config "$RELEASE_CFG/core.yaml" "$NETWORK_DIR/builders/ccaas"

start() {  # start NAME CMD... : background process with its log and pid under build/native
  local name="$1"
  shift
  "$@" >"$run/$name.log" 2>&1 &
  printf '%s\n' "$!" >"$run/$name.pid"
  log "started $name (pid $!)"
}

for endpoint in $(active_orderers); do
  host="$(host_of "$endpoint")"
  port="$(port_of "$endpoint")"
  name="${host%%.*}"
  base="$CRYPTO_DIR/ordererOrganizations/$DOMAIN/orderers/$host"
  mkdir -p "$run/$name"
  start "$name" env FABRIC_CFG_PATH="$RELEASE_CFG" \
    ORDERER_GENERAL_LISTENADDRESS=127.0.0.1 ORDERER_GENERAL_LISTENPORT="$port" \
    ORDERER_GENERAL_LOCALMSPID="$ORDERER_MSP" ORDERER_GENERAL_LOCALMSPDIR="$base/msp" \
    ORDERER_GENERAL_TLS_ENABLED=true ORDERER_GENERAL_TLS_PRIVATEKEY="$base/tls/server.key" \
    ORDERER_GENERAL_TLS_CERTIFICATE="$base/tls/server.crt" ORDERER_GENERAL_TLS_ROOTCAS="[$base/tls/ca.crt]" \
    ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE="$base/tls/server.crt" \
    ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY="$base/tls/server.key" \
    ORDERER_GENERAL_CLUSTER_ROOTCAS="[$base/tls/ca.crt]" \
    ORDERER_GENERAL_BOOTSTRAPMETHOD=none ORDERER_CHANNELPARTICIPATION_ENABLED=true \
    ORDERER_ADMIN_LISTENADDRESS="127.0.0.1:$((port + ORDERER_ADMIN_OFFSET))" ORDERER_ADMIN_TLS_ENABLED=true \
    ORDERER_ADMIN_TLS_PRIVATEKEY="$base/tls/server.key" ORDERER_ADMIN_TLS_CERTIFICATE="$base/tls/server.crt" \
    ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED=true ORDERER_ADMIN_TLS_CLIENTROOTCAS="[$base/tls/ca.crt]" \
    ORDERER_OPERATIONS_LISTENADDRESS="127.0.0.1:$((port + 10000))" \
    ORDERER_FILELEDGER_LOCATION="$run/$name/ledger" \
    orderer
done

for org in $HOSPITAL_ORGS; do
  peers="$(org_var PEERS "$org")"
  first="${peers%% *}"
  ccport="$(port_of "$(org_var CCAAS "$org")")"
  for endpoint in $peers; do
    host="$(host_of "$endpoint")"
    port="$(port_of "$endpoint")"
    name="${host%%.*}.$org"
    base="$CRYPTO_DIR/peerOrganizations/$(org_domain "$org")/peers/$host"
    bootstrap="$first"
    [ "$endpoint" = "$first" ] && bootstrap="${peers##* }"
    mkdir -p "$run/$name"
    start "$name" env FABRIC_CFG_PATH="$BUILD_DIR/config" \
      CORE_PEER_ID="$host" CORE_PEER_ADDRESS="$endpoint" CORE_PEER_LISTENADDRESS="127.0.0.1:$port" \
      CORE_PEER_CHAINCODEADDRESS="$host:$((port + 1))" CORE_PEER_CHAINCODELISTENADDRESS="127.0.0.1:$((port + 1))" \
      CORE_PEER_GOSSIP_BOOTSTRAP="$bootstrap" CORE_PEER_GOSSIP_EXTERNALENDPOINT="$endpoint" \
      CORE_PEER_LOCALMSPID="$(org_var ORG_MSP "$org")" CORE_PEER_MSPCONFIGPATH="$base/msp" \
      CORE_PEER_TLS_ENABLED=true CORE_PEER_TLS_CERT_FILE="$base/tls/server.crt" \
      CORE_PEER_TLS_KEY_FILE="$base/tls/server.key" CORE_PEER_TLS_ROOTCERT_FILE="$base/tls/ca.crt" \
      CORE_PEER_FILESYSTEMPATH="$run/$name/data" CORE_OPERATIONS_LISTENADDRESS="127.0.0.1:$((port + 10000))" \
      CORE_LEDGER_HISTORY_ENABLEHISTORYDATABASE=true CIPHERCARE_CCAAS_PORT="$ccport" \
      peer node start
  done
done

sleep 3
"$NETWORK_DIR/scripts/channel.sh"
log "network up (native, $CONSENSUS); next: scripts/deploy-chaincode.sh native"
