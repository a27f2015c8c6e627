#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Register and enroll ORG's ciphercare node identity at the org's Fabric CA, with the attributes the
# contracts read from a creator certificate (consent/caller.py): ciphercare.org, ciphercare.roles,
# ciphercare.client (hf.EnrollmentID is added by Fabric CA). Who signs what, and how end users are
# represented, is the identity design in docs/FABRIC.md.
# Usage: FABRIC_CA_ADMIN_SECRET=... scripts/enroll-node.sh hospital-a [node-name]
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
require_bin fabric-ca-client

org="${1:?usage: enroll-node.sh ORG [NODE_NAME]}"
node="${2:-ciphercare-node}"
: "${FABRIC_CA_ADMIN_SECRET:?set FABRIC_CA_ADMIN_SECRET (the CA bootstrap secret)}"
case " $HOSPITAL_ORGS " in *" $org "*) ;; *) die "unknown org $org (one of: $HOSPITAL_ORGS)" ;; esac
domain="$(org_domain "$org")"
port=7054
[ "$org" = "hospital-b" ] && port=8054
ca_url="https://localhost:$port"
ca_tls="$BUILD_DIR/fabric-ca/$org/tls-cert.pem"
admin_home="$BUILD_DIR/fabric-ca-clients/$org/admin"
node_home="$BUILD_DIR/fabric-ca-clients/$org/$node"
node_secret="$(openssl rand -hex 24)"

fabric-ca-client enroll -u "https://${FABRIC_CA_ADMIN:-admin}:$FABRIC_CA_ADMIN_SECRET@localhost:$port" \
  --caname "ca-$org" --tls.certfiles "$ca_tls" -H "$admin_home"
fabric-ca-client register -u "$ca_url" --caname "ca-$org" --tls.certfiles "$ca_tls" -H "$admin_home" \
  --id.name "$node" --id.secret "$node_secret" --id.type client --id.affiliation "$org.ciphercare" \
  --id.attrs "ciphercare.org=$org:ecert,ciphercare.roles=hospital:ecert,ciphercare.client=$node:ecert"
fabric-ca-client enroll -u "https://$node:$node_secret@localhost:$port" --caname "ca-$org" \
  --tls.certfiles "$ca_tls" -H "$node_home" --csr.names "O=$org" \
  --enrollment.attrs "hf.EnrollmentID,ciphercare.org,ciphercare.roles,ciphercare.client"
# The MSP's Node OU config, so the identity is a "client" of the org.
cp "$CRYPTO_DIR/peerOrganizations/$domain/msp/config.yaml" "$node_home/msp/config.yaml"
log "enrolled $node for $org (MSP $(org_var ORG_MSP "$org")) in $node_home/msp"
