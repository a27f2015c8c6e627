#!/usr/bin/env bash
# A real PostgreSQL server for the off-chain store tests.
#
# Sourced by scripts/test after the Python environment is installed (it can also be run on its own).
# Installs Debian's `postgresql` package when no server binaries are found, creates a private cluster
# under $CIPHERCARE_TEST_PG_DIR (default /tmp/ciphercare-test-pg), starts it in the background on
# 127.0.0.1:$CIPHERCARE_TEST_PG_PORT (default 55432) in its own session so it outlives this script,
# and exports CIPHERCARE_TEST_POSTGRES_URL (a superuser URL; the tests create and drop their own
# databases). Idempotent: a cluster that is already up is reused. As root the server runs as the
# `postgres` user. With CI=true any failure exits non-zero; otherwise it warns and the PostgreSQL
# half of the store tests is skipped.
#
# The cluster is disposable test infrastructure: fsync is off (the crash tests kill ciphercare, never
# PostgreSQL) and the password is generated once and kept next to the cluster, readable by root only.

_ccpg_fail() {
  echo "10-postgres: $*" >&2
  if [ "${CI:-}" = "true" ]; then
    exit 1
  fi
  if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    echo "10-postgres: continuing without PostgreSQL (the PostgreSQL store tests will be skipped)" >&2
  fi
  return 1
}

_ccpg_bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return 0
    fi
  done
  local initdb
  initdb=$(command -v initdb 2>/dev/null) || return 1
  dirname "$(readlink -f "$initdb")"
}

_ccpg_install() {
  if [ "$(id -u)" != 0 ]; then
    _ccpg_fail "no PostgreSQL server binaries and not root: install Debian's 'postgresql' package"
    return 1
  fi
  echo "10-postgres: installing Debian's postgresql package" >&2
  if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; then
    _ccpg_fail "apt-get update failed"
    return 1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
    _ccpg_fail "apt-get install postgresql failed"
    return 1
  fi
}

_ccpg_as_owner() {
  # Run a command as the cluster owner (postgres when we are root, ourselves otherwise).
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_ccpg_main() {
  local port=${CIPHERCARE_TEST_PG_PORT:-55432}
  local root=${CIPHERCARE_TEST_PG_DIR:-/tmp/ciphercare-test-pg}
  local data="$root/data" sock="$root/sock" logfile="$root/log/server.log" pwfile="$root/password"
  local started=$SECONDS bindir password

  bindir=$(_ccpg_bindir) || { _ccpg_install || return 1; bindir=$(_ccpg_bindir) || { _ccpg_fail "no initdb after installing postgresql"; return 1; }; }

  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres \
      || { _ccpg_fail "cannot create the postgres user"; return 1; }
  fi

  mkdir -p "$root" && chmod 711 "$root" || { _ccpg_fail "cannot create $root"; return 1; }
  if [ ! -s "$pwfile" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$pwfile") \
      || { _ccpg_fail "cannot write $pwfile"; return 1; }
  fi
  password=$(cat "$pwfile")

  if [ ! -s "$data/PG_VERSION" ]; then
    rm -rf "$data" "$sock" "$root/log"
    mkdir -p "$data" "$sock" "$root/log"
    local initpw="$root/.initdb-pw"
    (umask 077 && printf '%s\n' "$password" >"$initpw")
    if [ "$(id -u)" = 0 ]; then
      chown postgres: "$data" "$sock" "$root/log" "$initpw"
    fi
    chmod 700 "$data"
    if ! _ccpg_as_owner "$bindir/initdb" -D "$data" -U ciphercare --pwfile="$initpw" -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >"$root/initdb.log" 2>&1; then
      rm -f "$initpw"
      _ccpg_fail "initdb failed (see $root/initdb.log)"
      return 1
    fi
    rm -f "$initpw"
  fi

  if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
    # setsid: the server gets its own session, so it outlives the sourcing shell and its process group.
    if ! (cd "$root" && _ccpg_as_owner setsid "$bindir/pg_ctl" -D "$data" -l "$logfile" -w -t 60 -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $sock -c max_connections=200 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB" start >/dev/null 2>&1); then
      _ccpg_fail "PostgreSQL did not start on 127.0.0.1:$port (see $logfile)"
      return 1
    fi
  fi

  local url="postgresql+psycopg://ciphercare:${password}@127.0.0.1:${port}/postgres"
  if ! PGPASSWORD="$password" PGCONNECT_TIMEOUT=5 "$bindir/psql" -qAt -h 127.0.0.1 -p "$port" -U ciphercare \
      -d postgres -c "SELECT 1" >/dev/null 2>&1; then
    _ccpg_fail "something on 127.0.0.1:$port is not this script's cluster (set CIPHERCARE_TEST_PG_PORT)"
    return 1
  fi
  export CIPHERCARE_TEST_POSTGRES_URL="$url"
  echo "10-postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') ready on 127.0.0.1:$port" \
    "(data $data, $((SECONDS - started)) s)" >&2
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  _ccpg_main || true
else
  set -uo pipefail
  _ccpg_main || exit 1
  echo "export CIPHERCARE_TEST_POSTGRES_URL='$CIPHERCARE_TEST_POSTGRES_URL'"
fi
