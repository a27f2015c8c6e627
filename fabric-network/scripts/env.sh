# shellcheck shell=bash
# The network's names, hosts and ports in one place; sourced by every script here.
# tests/fabric/test_network_definition.py checks these against crypto-config.yaml, configtx.yaml,
# compose/compose.yaml, chaincode/definitions.env and the connection profiles the scripts write.

# Versions (pinned; BFT needs Fabric 3).
export FABRIC_VERSION="${FABRIC_VERSION:-2.5.10}"
export FABRIC_BFT_VERSION="${FABRIC_BFT_VERSION:-3.0.0}"
export FABRIC_CA_VERSION="${FABRIC_CA_VERSION:-1.5.12}"

export CHANNEL_NAME="ciphercare"
export DOMAIN="ciphercare.example"
# raft (three orderers, Fabric 2.5) or bft (four orderers, Fabric 3)
export CONSENSUS="${CONSENSUS:-raft}"

# Organisations: ciphercare org name, MSP id (ciphercare's msp_id_for_org), domain.
export HOSPITAL_ORGS="hospital-a hospital-b"
export ORG_MSP_hospital_a="HospitalAMSP"
export ORG_MSP_hospital_b="HospitalBMSP"
export ORDERER_MSP="OrdererMSP"

# Peers: host:port (listen), chaincode-listen and operations ports.
export PEERS_hospital_a="peer0.hospital-a.ciphercare.example:7051 peer1.hospital-a.ciphercare.example:8051"
export PEERS_hospital_b="peer0.hospital-b.ciphercare.example:9051 peer1.hospital-b.ciphercare.example:10051"
# Orderers: host:port (cluster+client) and admin (channel participation) ports.
export ORDERERS="orderer0.ciphercare.example:7050 orderer1.ciphercare.example:8050 orderer2.ciphercare.example:9050"
export ORDERER_BFT_EXTRA="orderer3.ciphercare.example:10050"
# admin port = orderer port + 3 (7053, 8053, 9053, 10053)
export ORDERER_ADMIN_OFFSET=3
# Each hospital runs its own chaincode server (chaincode as a service).
export CCAAS_hospital_a="ccaas.hospital-a.ciphercare.example:9999"
export CCAAS_hospital_b="ccaas.hospital-b.ciphercare.example:9998"

# Chaincode package (one package, one chaincode definition "ciphercare" serving every contract:
# chaincode/definitions.env).
export CC_LABEL="ciphercare_1.0"
export CC_VERSION="1.0"
export CC_SEQUENCE="${CC_SEQUENCE:-1}"

# Where generated material goes (never committed).
NETWORK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export NETWORK_DIR
export BUILD_DIR="${BUILD_DIR:-$NETWORK_DIR/build}"
export CRYPTO_DIR="${CRYPTO_DIR:-$BUILD_DIR/crypto}"
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-$BUILD_DIR/artifacts}"
export PROFILE_DIR="${PROFILE_DIR:-$BUILD_DIR/connection-profiles}"

# org_var PREFIX ORG -> the value of PREFIX_<org with - as _>
org_var() {
  local name="${1}_${2//-/_}"
  printf '%s\n' "${!name}"
}
