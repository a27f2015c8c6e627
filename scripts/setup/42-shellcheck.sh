# shellcheck shell=bash
# ShellCheck for the network scripts' lint test (tests/fabric/test_network_definition.py): Debian's
# `shellcheck` package, installed with apt-get when missing; exports CIPHERCARE_TEST_SHELLCHECK.
# Sourced by scripts/test (set -euo pipefail is in force). Under CI=true a missing ShellCheck fails
# the run; otherwise it warns and the lint test skips.

_cc_shellcheck_setup() {
  local path
  path=$(command -v shellcheck 2>/dev/null || true)
  if [ -z "$path" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "42-shellcheck: installing Debian's shellcheck with apt-get" >&2
      if ! { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >&2; }; then
        echo "42-shellcheck: apt-get install shellcheck failed" >&2
        return 1
      fi
    elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      echo "42-shellcheck: installing Debian's shellcheck with sudo apt-get" >&2
      if ! { sudo -n apt-get update -qq >&2 && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >&2; }; then
        echo "42-shellcheck: sudo apt-get install shellcheck failed" >&2
        return 1
      fi
    else
      echo "42-shellcheck: shellcheck not found and apt-get is not available" >&2
      return 1
    fi
    path=$(command -v shellcheck 2>/dev/null || true)
  fi
  if [ -z "$path" ] || ! "$path" --version >/dev/null 2>&1; then
    echo "42-shellcheck: shellcheck at '${path:-?}' does not run" >&2
    return 1
  fi
  export CIPHERCARE_TEST_SHELLCHECK="$path"
  echo "42-shellcheck: $("$path" --version | sed -n 's/^version: //p') at $path" >&2
}

if ! _cc_shellcheck_setup; then
  if [ "${CI:-}" = "true" ]; then
    echo "42-shellcheck: ShellCheck is required under CI=true; failing the run" >&2
    exit 1
  fi
  echo "42-shellcheck: WARNING: ShellCheck unavailable; the network scripts' lint test will be skipped" >&2
fi
unset -f _cc_shellcheck_setup
