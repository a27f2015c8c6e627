# shellcheck shell=bash
# The official Go Fabric Gateway client (github.com/hyperledger/fabric-gateway v1.7.0, pinned in
# tests/fabric/go/go.mod and go.sum) built into tests/fabric/go/bin/conformance for the conformance tests
# (tests/fabric). Rebuilt only when main.go, go.mod or go.sum is newer than the binary; modules come from
# the Go module proxy into the usual module cache. Installs Debian's golang-go with apt-get when go is
# missing. Exports CIPHERCARE_TEST_FABRIC_GO. Sourced by scripts/test (set -euo pipefail is in force).
# Under CI=true a failure fails the run; otherwise it warns and the Go conformance tests skip.

_cc_go_fabric_setup() {
  local dir="tests/fabric/go" bin="tests/fabric/go/bin/conformance"
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  if ! command -v go >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "55-go-fabric: installing Debian's golang-go with apt-get" >&2
      if ! { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >&2; }; then
        echo "55-go-fabric: apt-get install golang-go failed" >&2
        return 1
      fi
    else
      echo "55-go-fabric: go not found and apt-get is not available" >&2
      return 1
    fi
  fi
  if [ ! -x "$bin" ] || [ "$dir/main.go" -nt "$bin" ] || [ "$dir/go.mod" -nt "$bin" ] || [ "$dir/go.sum" -nt "$bin" ]; then
    echo "55-go-fabric: go build in $dir" >&2
    if ! (cd "$dir" && go build -mod=readonly -o bin/conformance . >&2); then
      echo "55-go-fabric: go build failed" >&2
      return 1
    fi
  fi
  CIPHERCARE_TEST_FABRIC_GO="$(pwd)/$bin"
  export CIPHERCARE_TEST_FABRIC_GO
  echo "55-go-fabric: $(go version | cut -d' ' -f3), fabric-gateway $(grep 'hyperledger/fabric-gateway ' "$dir/go.mod" | awk '{print $2}') at $bin" >&2
}

if ! _cc_go_fabric_setup; then
  if [ "${CI:-}" = "true" ]; then
    echo "55-go-fabric: the Go Fabric Gateway client is required under CI=true; failing the run" >&2
    exit 1
  fi
  echo "55-go-fabric: WARNING: Go client unavailable; tests/fabric Go conformance will be skipped" >&2
fi
unset -f _cc_go_fabric_setup
