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

# write_peer_config BASE_CORE_YAML BUILDERS_PATH: build/config/core.yaml = Fabric's core.yaml with
# ciphercare's external builder (config/core-external-builders.yaml) at BUILDERS_PATH.
write_peer_config() {
  local base="$1" builders="$2"
  mkdir -p "$BUILD_DIR/config"
  "${PYTHON:-python3}" - "$base" "$NETWORK_DIR/config/core-external-builders.yaml" "$builders" \
    "$BUILD_DIR/config/core.yaml" <<'PY' || die "could not write core.yaml (needs Python with PyYAML)"
import sys

import yaml

base, snippet, builders, out = sys.argv[1:5]
with open(base) as f:
    core = yaml.safe_load(f)
with open(snippet) as f:
    extra = yaml.safe_load(f)["chaincode"]["externalBuilders"]
for builder in extra:
    builder["path"] = builders
kept = [b for b in core["chaincode"].get("externalBuilders") or [] if b.get("name") not in {b["name"] for b in extra}]
# first: the peer asks builders in order, and Fabric's own ccaas_builder (in the 2.5 images'
# core.yaml) would otherwise claim the package and not understand its address template
core["chaincode"]["externalBuilders"] = extra + kept
with open(out, "w") as f:
    yaml.safe_dump(core, f, sort_keys=False)
PY
}

# Every network host must resolve (to 127.0.0.1 for a one-machine network); print the /etc/hosts lines if not.
check_hosts() {
  local org endpoint host missing="" endpoints
  endpoints="$(active_orderers)"
  for org in $HOSPITAL_ORGS; do
    endpoints="$endpoints $(org_var PEERS "$org") $(org_var CCAAS "$org")"
  done
  for endpoint in $endpoints; do
    host="$(host_of "$endpoint")"
    getent hosts "$host" >/dev/null 2>&1 || missing="$missing $host"
  done
  if [ -n "$missing" ]; then
    log "these hosts do not resolve; add to /etc/hosts:"
    for host in $missing; do printf '127.0.0.1 %s\n' "$host" >&2; done
    exit 1
  fi
}

# A PEM file as the body of a JSON string (newlines escaped; PEM holds no quotes or backslashes).
pem_json() {
  [ -r "$1" ] || die "cannot read $1"
  awk 'BEGIN { ORS = "" } { gsub(/\r/, ""); print $0 "\\n" }' "$1"
}
