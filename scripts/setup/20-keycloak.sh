# shellcheck shell=bash
# Keycloak for the identity tests (tests/keycloak): fetch org.keycloak:keycloak-quarkus-dist from
# Maven Central with `mvn dependency:get` (cached in the local Maven repository), unpack it once under
# ~/.cache/ciphercare/keycloak and export CIPHERCARE_TEST_KEYCLOAK_HOME. Download and unpack only: the
# pytest session fixture (tests/keycloak/conftest.py) starts and stops the server.
#
# Sourced by scripts/test (set -euo pipefail is in force). Under CI=true any failure exits non-zero;
# otherwise it warns and the Keycloak tests skip because the distribution is absent.

_cc_keycloak_setup() {
  local version="${CIPHERCARE_KEYCLOAK_VERSION:-26.4.5}"
  local cache="${CIPHERCARE_KEYCLOAK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciphercare/keycloak}"
  local home="$cache/keycloak-$version"
  local artifact="org.keycloak:keycloak-quarkus-dist:$version:tar.gz"
  local repo archive java_major

  if ! command -v java >/dev/null 2>&1; then
    echo "20-keycloak: java not found (Keycloak $version needs Java 17+)" >&2
    return 1
  fi
  java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')
  if [ -z "$java_major" ] || [ "$java_major" -lt 17 ]; then
    echo "20-keycloak: Java ${java_major:-?} found; Keycloak $version needs Java 17 or newer" >&2
    return 1
  fi

  if [ ! -x "$home/bin/kc.sh" ] || [ ! -f "$home/.ciphercare-complete" ]; then
    if ! command -v mvn >/dev/null 2>&1; then
      echo "20-keycloak: mvn not found (needed to fetch $artifact)" >&2
      return 1
    fi
    echo "20-keycloak: fetching $artifact with mvn dependency:get" >&2
    mvn -B -q -Dstyle.color=never dependency:get -Dartifact="$artifact" -Dtransitive=false >&2 || {
      echo "20-keycloak: mvn dependency:get $artifact failed" >&2
      return 1
    }
    repo="${MAVEN_REPO_LOCAL:-$HOME/.m2/repository}"
    archive="$repo/org/keycloak/keycloak-quarkus-dist/$version/keycloak-quarkus-dist-$version.tar.gz"
    if [ ! -s "$archive" ]; then  # a settings.xml with another localRepository
      repo=$(mvn -B -q help:evaluate -Dexpression=settings.localRepository -DforceStdout 2>/dev/null || true)
      archive="$repo/org/keycloak/keycloak-quarkus-dist/$version/keycloak-quarkus-dist-$version.tar.gz"
    fi
    if [ ! -s "$archive" ]; then
      echo "20-keycloak: $archive missing after mvn dependency:get" >&2
      return 1
    fi
    mkdir -p "$cache"
    local staging
    staging=$(mktemp -d "$cache/.unpack.XXXXXX")
    if ! tar -xzf "$archive" -C "$staging"; then
      rm -rf "$staging"
      echo "20-keycloak: cannot unpack $archive" >&2
      return 1
    fi
    touch "$staging/keycloak-$version/.ciphercare-complete"
    rm -rf "$home"
    # Another run may have finished first; either copy is complete, so losing the race is fine.
    mv "$staging/keycloak-$version" "$home" 2>/dev/null || true
    rm -rf "$staging"
  fi
  if [ ! -x "$home/bin/kc.sh" ]; then
    echo "20-keycloak: $home/bin/kc.sh missing" >&2
    return 1
  fi
  export CIPHERCARE_TEST_KEYCLOAK_HOME="$home"
  export CIPHERCARE_TEST_KEYCLOAK_VERSION="$version"
  echo "20-keycloak: Keycloak $version at $home (Java $java_major)" >&2
}

if ! _cc_keycloak_setup; then
  if [ "${CI:-}" = "true" ]; then
    echo "20-keycloak: Keycloak is required under CI=true; failing the run" >&2
    exit 1
  fi
  echo "20-keycloak: WARNING: Keycloak unavailable; tests/keycloak will be skipped" >&2
fi
unset -f _cc_keycloak_setup
