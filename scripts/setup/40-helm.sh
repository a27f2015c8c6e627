# shellcheck shell=bash
# Go-built tools for the chart tests (tests/deploy) and the load benchmarks: helm and ghz, each with
# `go install <module>@<version>` from the Go module proxy into a cache directory,
# ${XDG_CACHE_HOME:-$HOME/.cache}/ciphercare/bin, kept between runs. A binary already there is reused when
# `go version -m` shows the pinned module version; otherwise it is (re)built (the Go module and build caches
# make a rebuild cheap; a cold helm build takes about 4 minutes on 2 cores).
# Exports HELM_BIN and GHZ_BIN.
#
# Sourced by scripts/test (set -euo pipefail is in force); it can also be run on its own.
# Under CI=true a tool that cannot be had fails the run; otherwise it warns and the tests that need it skip.

_cc_go_tool() {
  # _cc_go_tool NAME MODULE PACKAGE VERSION -> prints the path of a binary built from MODULE@VERSION
  local name=$1 module=$2 package=$3 version=$4
  local bindir="${CIPHERCARE_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/ciphercare/bin}"
  local bin="$bindir/$name" have started=$SECONDS
  if [ -x "$bin" ]; then
    have=$(go version -m "$bin" 2>/dev/null | awk -v m="$module" '$1 == "mod" && $2 == m {print $3}')
    if [ "$have" = "$version" ]; then
      echo "$bin"
      return 0
    fi
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "40-helm: go not found (needed for go install $package@$version)" >&2
    return 1
  fi
  mkdir -p "$bindir"
  echo "40-helm: go install $package@$version into $bindir" >&2
  if ! GOBIN="$bindir" go install "$package@$version" >&2; then
    echo "40-helm: go install $package@$version failed" >&2
    return 1
  fi
  have=$(go version -m "$bin" 2>/dev/null | awk -v m="$module" '$1 == "mod" && $2 == m {print $3}')
  if [ "$have" != "$version" ]; then
    echo "40-helm: $bin reports module version '${have:-?}', expected $version" >&2
    return 1
  fi
  echo "40-helm: built $name $version in $((SECONDS - started)) s" >&2
  echo "$bin"
}

_cc_go_tools_setup() {
  local helm ghz failed=0
  if helm=$(_cc_go_tool helm helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm "${CIPHERCARE_HELM_VERSION:-v4.3.2}"); then
    export HELM_BIN="$helm"
    echo "40-helm: helm at $HELM_BIN" >&2
  else
    failed=1
  fi
  if ghz=$(_cc_go_tool ghz github.com/bojand/ghz github.com/bojand/ghz/cmd/ghz "${CIPHERCARE_GHZ_VERSION:-v0.121.0}"); then
    export GHZ_BIN="$ghz"
    echo "40-helm: ghz at $GHZ_BIN" >&2
  else
    failed=1
  fi
  return $failed
}

if ! _cc_go_tools_setup; then
  if [ "${CI:-}" = "true" ]; then
    echo "40-helm: helm and ghz are required under CI=true; failing the run" >&2
    exit 1
  fi
  echo "40-helm: WARNING: helm or ghz unavailable; tests/deploy (and ghz benchmarks) will skip" >&2
fi
unset -f _cc_go_tool _cc_go_tools_setup
