#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stop the network started by network-up-native.sh or network-up-compose.sh and remove build/.
# Usage: scripts/network-down.sh native|compose [--keep-build]
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "$0")/env.sh"
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

mode="${1:?usage: network-down.sh native|compose [--keep-build]}"
if [ "$mode" = "native" ]; then
  for pidfile in "$BUILD_DIR"/native/*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null && log "stopped $(basename "$pidfile" .pid) (pid $pid)"
    rm -f "$pidfile"
  done
elif [ "$mode" = "compose" ]; then
  read -r -a compose <<<"${COMPOSE:-docker compose}"
  "${compose[@]}" -f "$NETWORK_DIR/compose/compose.yaml" --profile bft --profile chaincode --profile ca down -v
else
  die "mode must be native or compose, not $mode"
fi
[ "${2:-}" = "--keep-build" ] || rm -rf "$BUILD_DIR"
