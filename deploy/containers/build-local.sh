#!/usr/bin/env bash
# Build the ciphercare images without any container registry, from Debian packages only, and start them.
#
#   deploy/containers/build-local.sh base              # Debian bookworm + python3.11 root (debootstrap) as a base image
#   deploy/containers/build-local.sh build [TARGET..]  # build targets (default: api) on that base, docker format
#   deploy/containers/build-local.sh smoke [TARGET..]  # start each image (default: api) with runc: read-only root,
#                                                       # uid 10001, no capabilities, own network namespace; run
#                                                       # its health check; stop it with SIGTERM (exit 0)
#
# Needs root and Debian's buildah, debootstrap and runc (apt-get install buildah debootstrap runc). Storage is
# buildah's vfs driver (works without overlay support). Behind a TLS-inspecting proxy, set PIP_CA_BUNDLE to
# its CA bundle: passed to the dependency download as a build secret, never stored in a layer.
# Heavy (a few minutes and about 1 GB per image): not part of the test suite; docs/DEPLOY.md says what it showed.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE=${CIPHERCARE_BASE_IMAGE:-localhost/ciphercare-base:bookworm-py311}
TAG=${CIPHERCARE_IMAGE_TAG:-dev}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
B=(buildah --storage-driver vfs)

base() {
  local ctr mnt
  ctr=$("${B[@]}" from scratch)
  mnt=$("${B[@]}" mount "$ctr")
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$mnt" "$MIRROR"
  rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/lib/apt/lists/*
  "${B[@]}" umount "$ctr" >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  "${B[@]}" commit -q "$ctr" "$BASE"
  "${B[@]}" rm "$ctr" >/dev/null
  echo "base image $BASE"
}

build() {
  local target secret=()
  [ -n "${PIP_CA_BUNDLE:-}" ] && secret=(--secret "id=pip_ca,src=$PIP_CA_BUNDLE")
  for target in "${@:-api}"; do
    "${B[@]}" build --isolation chroot --format docker --layers=false "${secret[@]}" \
      --build-arg "PYTHON_IMAGE=$BASE" --target "$target" -t "localhost/ciphercare-$target:$TAG" \
      -f deploy/containers/Containerfile .
  done
}

smoke() {
  local target rc=0
  for target in "${@:-api}"; do
    echo "== smoke $target"
    smoke_one "$target" || { rc=1; echo "== smoke $target: FAILED"; }
  done
  return "$rc"
}

smoke_one() {
  local target=$1 work ctr mnt pid rc=0 code=0 check status
  case "$target" in
    api) check=(grpc 127.0.0.1:50051) ;;
    ledger) check=(tcp 127.0.0.1:7051) ;;
    witness) check=(http http://127.0.0.1:7060/vkey) ;;
    chaincode) check=(tcp 127.0.0.1:9999) ;;
    *) echo "smoke: api, ledger, witness or chaincode" >&2; return 2 ;;
  esac
  work=$(mktemp -d)
  mkdir -p "$work/bundle" "$work/data"
  chown 10001:10001 "$work/data" && chmod 0750 "$work/data"
  ctr=$("${B[@]}" from "localhost/ciphercare-$target:$TAG")
  mnt=$("${B[@]}" mount "$ctr")
  echo "-- no private key in the image (PEM blocks in any file):"
  if grep -rlIE --exclude-dir=proc --exclude-dir=sys -e '^-----BEGIN [A-Z ]*PRIVATE KEY-----' "$mnt"; then
    rc=1; echo "a private key is baked in!"
  else
    echo "none"
  fi
  (cd "$work/bundle" && runc spec)
  python3 - "$work/bundle/config.json" "$mnt" "$work/data" "$target" <<'PY'
import json
import sys

path, rootfs, data, target = sys.argv[1:]
# a log key to witness (an example key; the witness only needs one to start)
LOG = "hospital-b.example.org/ledger+4a1d5aec+AUuAZai3wxnSRFJ/FjQFRrv74lL/cIR42bsmSzuD2Xe1"
ARGS = {
    "api": ["ciphercare", "up"],
    # plaintext is allowed on loopback only (the chart's node listens with TLS); no MSP yet, a fresh log
    "ledger": ["ciphercare", "ledger", "serve", "--port", "7051"],
    "witness": ["ciphercare", "witness", "serve", "--dir", "/var/lib/ciphercare", "--host", "127.0.0.1", "--port",
                "7060", "--name", "witness.example.org", "--log", LOG],
    "chaincode": ["ciphercare", "chaincode", "serve"],
}
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
p = c["process"]
p.update(terminal=False, user={"uid": 10001, "gid": 10001}, cwd="/var/lib/ciphercare", args=ARGS[target],
         noNewPrivileges=True)
p["env"] = ["PATH=/opt/ciphercare/bin:/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1",
            "CIPHERCARE_DATA_DIR=/var/lib/ciphercare", "CIPHERCARE_GRPC_HOST=127.0.0.1", "CIPHERCARE_GRPC_PORT=50051",
            "CIPHERCARE_WEB_HOST=127.0.0.1", "CIPHERCARE_WEB_PORT=3000", "CIPHERCARE_DEV_ISSUER_ENABLED=false",
            "CIPHERCARE_LEDGER_NODE_HOST=127.0.0.1",
            "CIPHERCARE_OIDC_ISSUER=https://127.0.0.1:1/realms/ciphercare",
            "CHAINCODE_ID=ciphercare_1.0:smoke", "CHAINCODE_SERVER_ADDRESS=127.0.0.1:9999", "CHAINCODE_TLS_DISABLED=true"]
p["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
# its own network namespace (runc brings up loopback; `runc exec` joins it, so the check reaches 127.0.0.1
# inside and no host port is taken); no cgroup setup needed
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "cgroup"]
c["linux"].pop("resources", None)
c["mounts"] = [m for m in c["mounts"] if m["destination"] not in ("/tmp", "/sys/fs/cgroup")] + [
    {"destination": "/var/lib/ciphercare", "type": "bind", "source": data, "options": ["rbind", "rw"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=256m"]},
]
json.dump(c, open(path, "w"), indent=1)
PY
  runc run --bundle "$work/bundle" "ciphercare-smoke-$$" >"$work/out.log" 2>"$work/err.log" &
  pid=$!
  for _ in $(seq 1 180); do
    runc exec "ciphercare-smoke-$$" ciphercare-healthcheck "${check[@]}" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  cat "$work/out.log"
  echo "-- HEALTHCHECK inside the container: ciphercare-healthcheck ${check[*]}"
  runc exec "ciphercare-smoke-$$" ciphercare-healthcheck "${check[@]}" && echo "healthy" || rc=1
  if [ "$target" = api ]; then
    runc exec "ciphercare-smoke-$$" ciphercare-healthcheck http http://127.0.0.1:3000/healthz && echo "web: ok" || rc=1
  fi
  echo "-- the root filesystem is read-only, the process is uid 10001 with no capabilities:"
  if runc exec "ciphercare-smoke-$$" sh -c 'touch /opt/ciphercare/probe' 2>/dev/null; then rc=1; echo "root fs writable!"; fi
  status=$(runc exec "ciphercare-smoke-$$" grep -E '^(Uid|Gid|Cap[A-Za-z]+|NoNewPrivs):' /proc/1/status)
  echo "$status"
  printf '%s\n' "$status" | awk '
    /^(Uid|Gid):/ { for (i = 2; i <= 5; i++) if ($i != 10001) bad = 1 }
    /^Cap/ { if ($2 !~ /^0+$/) bad = 1 }
    /^NoNewPrivs:/ { if ($2 != 1) bad = 1 }
    END { exit bad }' || { rc=1; echo "not uid 10001 without capabilities!"; }
  runc kill "ciphercare-smoke-$$" TERM
  wait "$pid" || code=$?
  [ "$code" = 0 ] || rc=1
  echo "-- exit status after SIGTERM: $code; state written:"
  ls -l "$work/data"
  runc delete -f "ciphercare-smoke-$$" 2>/dev/null || true
  "${B[@]}" umount "$ctr" >/dev/null
  "${B[@]}" rm "$ctr" >/dev/null
  rm -rf "$work"
  return "$rc"
}

case "${1:-}" in
  base) base ;;
  build) shift; build "$@" ;;
  smoke) shift; smoke "$@" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
