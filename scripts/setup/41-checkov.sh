# shellcheck shell=bash
# checkov (PyPI) for the chart's security scan (tests/deploy/test_chart.py), in a virtual environment of its
# own under ${XDG_CACHE_HOME:-$HOME/.cache}/ciphercare/checkov-<version>, kept between runs: checkov pins
# many libraries of its own (about 290 MB installed, about 5 minutes to install cold on 2 cores), so it stays
# out of the project's environment. Exports CHECKOV_BIN.
#
# Sourced by scripts/test (set -euo pipefail is in force). Under CI=true a failed install fails the run;
# otherwise it warns and the checkov test skips.

_cc_checkov_setup() {
  local version="${CIPHERCARE_CHECKOV_VERSION:-3.3.30}"
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/ciphercare/checkov-$version"
  local python="${PYTHON:-python3}" started=$SECONDS
  if [ ! -x "$venv/bin/checkov" ] || [ ! -f "$venv/.ciphercare-complete" ]; then
    echo "41-checkov: installing checkov $version into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" || { echo "41-checkov: cannot create $venv" >&2; return 1; }
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "checkov==$version" >&2; then
      echo "41-checkov: pip install checkov==$version failed" >&2
      rm -rf "$venv"
      return 1
    fi
    touch "$venv/.ciphercare-complete"
    echo "41-checkov: installed in $((SECONDS - started)) s" >&2
  fi
  export CHECKOV_BIN="$venv/bin/checkov"
  echo "41-checkov: checkov $version at $CHECKOV_BIN" >&2
}

if ! _cc_checkov_setup; then
  if [ "${CI:-}" = "true" ]; then
    echo "41-checkov: checkov is required under CI=true; failing the run" >&2
    exit 1
  fi
  echo "41-checkov: WARNING: checkov unavailable; the chart scan test will skip" >&2
fi
unset -f _cc_checkov_setup
