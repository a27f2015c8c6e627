# shellcheck shell=bash
# Node.js and the official Fabric Gateway client (@hyperledger/fabric-gateway 1.12.x from npm) for the
# conformance tests (tests/fabric): `npm ci` in tests/fabric/node from its package-lock.json, skipped
# when node_modules already matches the lock (a stamp holds the lock's SHA-256). Installs Debian's
# nodejs/npm with apt-get when node is missing. Sourced by scripts/test (set -euo pipefail is in force).
# Under CI=true a failure fails the run; otherwise it warns and the conformance tests skip.

_cc_node_fabric_setup() {
  local dir="tests/fabric/node"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "50-node-fabric: installing Debian's nodejs and npm with apt-get" >&2
      if ! { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2; }; then
        echo "50-node-fabric: apt-get install nodejs npm failed" >&2
        return 1
      fi
    else
      echo "50-node-fabric: node/npm not found and apt-get is not available" >&2
      return 1
    fi
  fi
  local want have=""
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ -f "$dir/node_modules/.ciphercare-lock.sha256" ]; then
    have=$(cat "$dir/node_modules/.ciphercare-lock.sha256")
  fi
  if [ "$want" != "$have" ] || [ ! -d "$dir/node_modules/@hyperledger/fabric-gateway" ]; then
    echo "50-node-fabric: npm ci in $dir" >&2
    if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2); then
      echo "50-node-fabric: npm ci failed" >&2
      return 1
    fi
    echo "$want" > "$dir/node_modules/.ciphercare-lock.sha256"
  fi
  if ! (cd "$dir" && node -e "require('@hyperledger/fabric-gateway')") >/dev/null 2>&1; then
    echo "50-node-fabric: @hyperledger/fabric-gateway does not load" >&2
    return 1
  fi
  echo "50-node-fabric: node $(node --version), @hyperledger/fabric-gateway $(cd "$dir" && node -p "require('@hyperledger/fabric-gateway/package.json').version")" >&2
}

if ! _cc_node_fabric_setup; then
  if [ "${CI:-}" = "true" ]; then
    echo "50-node-fabric: the Node Fabric Gateway client is required under CI=true; failing the run" >&2
    exit 1
  fi
  echo "50-node-fabric: WARNING: Node client unavailable; tests/fabric conformance will be skipped" >&2
fi
unset -f _cc_node_fabric_setup
