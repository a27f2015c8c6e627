# shellcheck shell=bash
# Helpers shared by the network scripts (sourced after env.sh).

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_bin() {
  local bin
  for bin in "$@"; do
    command -v "$bin" >/dev/null 2>&1 || die "$bin not found on PATH (install the Fabric ${FABRIC_VERSION} binaries: see fabric-network/README.md)"
  done
}

host_of() { printf '%s\n' "${1%%:*}"; }
port_of() { printf '%s\n' "${1##*:}"; }

# The org's domain and crypto paths (cryptogen layout).
org_domain() { printf '%s.%s\n' "$1" "$DOMAIN"; }
org_msp_dir() { printf '%s/peerOrganizations/%s/msp\n' "$CRYPTO_DIR" "$(org_domain "$1")"; }
org_admin_msp() { printf '%s/peerOrganizations/%s/users/Admin@%s/msp\n' "$CRYPTO_DIR" "$(org_domain "$1")" "$(org_domain "$1")"; }
peer_tls_dir() { printf '%s/peerOrganizations/%s/peers/%s/tls\n' "$CRYPTO_DIR" "$(org_domain "$1")" "$2"; }
orderer_tls_dir() { printf '%s/ordererOrganizations/%s/orderers/%s/tls\n' "$CRYPTO_DIR" "$DOMAIN" "$1"; }
orderer_ca() { printf '%s/ordererOrganizations/%s/tlsca/tlsca.%s-cert.pem\n' "$CRYPTO_DIR" "$DOMAIN" "$DOMAIN"; }

# The orderers of the chosen consensus.
active_orderers() {
  if [ "$CONSENSUS" = "bft" ]; then
    printf '%s %s\n' "$ORDERERS" "$ORDERER_BFT_EXTRA"
  else
    printf '%s\n' "$ORDERERS"
  fi
}

# Act as ORG's admin against PEER (host:port): the peer CLI's environment.
as_org_admin() {
  local org="$1" peer="$2"
  export CORE_PEER_TLS_ENABLED=true
  CORE_PEER_LOCALMSPID="$(org_var ORG_MSP "$org")"
  CORE_PEER_MSPCONFIGPATH="$(org_admin_msp "$org")"
  CORE_PEER_ADDRESS="$peer"
  CORE_PEER_TLS_ROOTCERT_FILE="$(peer_tls_dir "$org" "$(host_of "$peer")")/ca.crt"
  export CORE_PEER_LOCALMSPID CORE_PEER_MSPCONFIGPATH CORE_PEER_ADDRESS CORE_PEER_TLS_ROOTCERT_FILE
}
