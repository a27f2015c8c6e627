# shellcheck shell=bash
# Chromium for the browser tests (tests/web): Debian's `chromium` package, driven by Playwright with
# executable_path (no browser download). Installs it with apt-get when missing and exports
# CIPHERCARE_TEST_CHROMIUM. Sourced by scripts/test (set -euo pipefail is in force).
# Under CI=true a missing Chromium fails the run; otherwise it warns and tests/web skip.

_cc_chromium_setup() {
  local path="${CIPHERCARE_TEST_CHROMIUM:-}"
  if [ -z "$path" ] || [ ! -x "$path" ]; then
    path=$(command -v chromium 2>/dev/null || true)
  fi
  if [ -z "$path" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "30-chromium: installing Debian's chromium with apt-get" >&2
      if ! { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >&2; }; then
        echo "30-chromium: apt-get install chromium failed" >&2
        return 1
      fi
    elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      echo "30-chromium: installing Debian's chromium with sudo apt-get" >&2
      if ! { sudo -n apt-get update -qq >&2 && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >&2; }; then
        echo "30-chromium: sudo apt-get install chromium failed" >&2
        return 1
      fi
    else
      echo "30-chromium: chromium not found and apt-get is not available" >&2
      return 1
    fi
    path=$(command -v chromium 2>/dev/null || true)
  fi
  if [ -z "$path" ] || ! "$path" --version >/dev/null 2>&1; then
    echo "30-chromium: chromium at '${path:-?}' does not run" >&2
    return 1
  fi
  export CIPHERCARE_TEST_CHROMIUM="$path"
  echo "30-chromium: $("$path" --version 2>/dev/null | head -n1) at $path" >&2
}

if ! _cc_chromium_setup; then
  if [ "${CI:-}" = "true" ]; then
    echo "30-chromium: Chromium is required under CI=true; failing the run" >&2
    exit 1
  fi
  echo "30-chromium: WARNING: Chromium unavailable; tests/web will be skipped" >&2
fi
unset -f _cc_chromium_setup
