"""The container recipe (deploy/containers/Containerfile) and its entry points.

The recipe is checked by rules (pinned base, numeric non-root USER, HEALTHCHECK, exec-form entry points, no
ADD, nothing secret copied or baked into ENV) and against the chart (same commands and ports). Each entry point
that exists today runs as a process with the image's environment and the chart's settings, checked by the
image's own health check, then stopped. The TLS path of the health check runs against a real TLS gRPC server
with certificates made here.
"""

from __future__ import annotations

import datetime
import fnmatch
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from testkit.deploy.chart import REPO, documents, pod_spec, require_tool, template, workloads
from testkit.deploy.recipe import CONTAINERFILE, HEALTHCHECK, recipe_violations, target_command, target_env
from testkit.process import CLI, free_port

from ciphercare.services.store.envelope import KeyEncryptionKey

TARGETS = ("api", "ledger", "witness", "chaincode")


def _healthcheck(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


# the recipe's rules --------------------------------------------------------------------------------------------


def test_recipe_follows_the_rules() -> None:
    assert recipe_violations(CONTAINERFILE.read_text(), TARGETS) == []


def test_recipe_installs_the_server_extra() -> None:
    """A plain install is the SDK only: the services need pyproject's `server` extra in the image."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "server" in extras
    installs = [line for line in CONTAINERFILE.read_text().splitlines() if "pip install" in line]
    assert installs and all('".[server]"' in line for line in installs), installs


GOOD = """ARG BASE=docker.io/library/python:3.11.14-slim-bookworm
FROM ${BASE} AS runtime
COPY app /app
USER 10001:10001
ENTRYPOINT ["ciphercare"]
FROM runtime AS api
EXPOSE 50051
HEALTHCHECK CMD ["ciphercare-healthcheck", "grpc", "127.0.0.1:50051"]
CMD ["up"]
"""

BROKEN = [
    (GOOD.replace("python:3.11.14-slim-bookworm", "python:3.11-slim"), "not pinned"),
    (GOOD.replace("python:3.11.14-slim-bookworm", "python:latest"), "not pinned"),
    (GOOD.replace("ARG BASE=docker.io/library/python:3.11.14-slim-bookworm", "ARG BASE"), "has no default"),
    (GOOD.replace("USER 10001:10001", "USER root"), "not a numeric non-root uid"),
    (GOOD.replace("USER 10001:10001", "USER 0"), "not a numeric non-root uid"),
    (GOOD.replace("USER 10001:10001\n", ""), "no USER"),
    (GOOD.replace('HEALTHCHECK CMD ["ciphercare-healthcheck", "grpc", "127.0.0.1:50051"]', "HEALTHCHECK NONE"),
     "no HEALTHCHECK"),
    (GOOD.replace("COPY app /app", "ADD https://example.org/app.tgz /app"), "ADD"),
    (GOOD.replace("COPY app /app", "COPY secrets/kek.key /etc/kek.key"), "secret-looking material"),
    (GOOD.replace("COPY app /app", "ENV CIPHERCARE_DATABASE_URL=postgresql://u:p@db/x"), "bakes a secret"),
    (GOOD.replace('CMD ["up"]', "CMD ciphercare up"), "CMD missing or not in exec form"),
    (GOOD.replace("EXPOSE 50051\n", ""), "no EXPOSE"),
]


def test_good_example_passes() -> None:
    assert recipe_violations(GOOD, ("api",)) == []


@pytest.mark.parametrize(("recipe", "problem"), BROKEN, ids=[p for _, p in BROKEN])
def test_rules_catch_a_broken_recipe(recipe: str, problem: str) -> None:
    problems = recipe_violations(recipe, ("api",))
    assert any(problem in p for p in problems), problems


def test_missing_target_is_reported() -> None:
    assert recipe_violations(GOOD, ("api", "ledger")) == ["target ledger: missing"]


def test_build_context_keeps_keys_state_and_environments_out() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
                   or path.startswith(p.rstrip("/") + "/") for p in patterns)

    for path in (".venv/bin/python", ".git/config", ".ciphercare/kek.key", "deploy/keys/checkpoint.pem",
                 "services/web/dev.key", ".env", "ledger.db", "tests/conftest.py"):
        assert ignored(path), path
    for path in ("pyproject.toml", "services/platform/settings.py", "deploy/containers/healthcheck.py"):
        assert not ignored(path), path


def test_recipe_and_chart_run_the_same_commands_on_the_same_ports() -> None:
    helm_bin = require_tool("HELM_BIN", "helm", "source scripts/setup/40-helm.sh")
    recipe = CONTAINERFILE.read_text()
    rendered: dict[str, dict[str, Any]] = {}
    for args in ((), ("-f", str(REPO / "helm/ciphercare/ci/production-values.yaml"))):
        for workload in workloads(documents(template(helm_bin, *args).stdout)):
            rendered[workload["metadata"]["labels"]["app.kubernetes.io/component"]] = workload
    assert set(rendered) == set(TARGETS)
    for target in TARGETS:
        container = pod_spec(rendered[target])["containers"][0]
        command = target_command(recipe, target)
        if target == "witness":  # the chart adds the witness's name, algorithm and logs to the image's command
            assert ["ciphercare", *container["args"]][:len(command)] == command
        else:
            assert command == ["ciphercare", *container["args"]], target
        assert container["image"].split("/")[-1].split(":")[0].split("@")[0] == f"ciphercare-{target}"
        ports = {p["containerPort"] for p in container["ports"]} - {9464}
        exposed = {int(p) for line in recipe.split(f"AS {target}\n", 1)[1].split("FROM", 1)[0].splitlines()
                   if line.startswith("EXPOSE") for p in line.split()[1:]}
        assert exposed == ports, target


# entry points as processes --------------------------------------------------------------------------------------


def _cli_knows(*words: str) -> bool:
    proc = subprocess.run([*CLI, *words, "--help"], capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode == 0


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_command_is_a_cli_command(target: str) -> None:
    command = target_command(CONTAINERFILE.read_text(), target)[1:]
    words = list(itertools.takewhile(lambda w: not w.startswith("-"), command))
    assert _cli_knows(*words), command  # every container entry point is a real `ciphercare` command


def _init_script(helm_bin: str) -> str:
    """The key-installing init container's script of the embedded API pod, as the chart renders it."""
    docs = documents(template(helm_bin, "-f", str(REPO / "helm/ciphercare/ci/embedded-values.yaml")).stdout)
    (api,) = workloads(docs)
    (init,) = pod_spec(api)["initContainers"]
    assert init["command"][:2] == ["/bin/sh", "-ec"]
    return str(init["command"][2])


@pytest.fixture
def container_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The api target's environment with the chart's settings, on loopback and private directories."""
    env = {k: v for k, v in target_env(CONTAINERFILE.read_text(), "api").items() if k != "PATH"}
    data = tmp_path / "data"
    data.mkdir()
    env.update({
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "CIPHERCARE_DATA_DIR": str(data),
        "CIPHERCARE_GRPC_HOST": "127.0.0.1",
        "CIPHERCARE_GRPC_PORT": str(free_port()),
        "CIPHERCARE_WEB_HOST": "127.0.0.1",
        "CIPHERCARE_WEB_PORT": str(free_port()),
        # as the chart sets them: no development issuer, an external issuer (nothing listens there)
        "CIPHERCARE_DEV_ISSUER_ENABLED": "false",
        "CIPHERCARE_OIDC_ISSUER": f"https://127.0.0.1:{free_port()}/realms/ciphercare",
        "CIPHERCARE_LEDGER_BACKEND": "embedded",
        "CIPHERCARE_WEB_PUBLIC_URL": "https://ciphercare.example.org",
    })
    yield env


def _run_until_up(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*CLI, "up"], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "try: ciphercare demo" in line:
            return proc
    proc.wait(timeout=30)
    raise AssertionError(f"ciphercare up exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")


def test_api_entrypoint_runs_with_the_charts_keys_and_settings(container_env: dict[str, str],
                                                                tmp_path: Path) -> None:
    """`ciphercare up` as the api image runs it: keys installed by the chart's init script from group-readable
    Secret files, healthy by the image's health check, writing only under its data directory, stopped cleanly
    by SIGTERM (what the kubelet sends)."""
    helm_bin = require_tool("HELM_BIN", "helm", "source scripts/setup/40-helm.sh")
    secrets, keys = tmp_path / "secrets", tmp_path / "keys"
    (secrets / "kek").mkdir(parents=True)
    (secrets / "checkpoint-key").mkdir()
    keys.mkdir(mode=0o700)
    KeyEncryptionKey.generate().write_new(secrets / "kek" / "kek.key")
    from ciphercare.ledger.transparency.checkpoint import CheckpointSigner

    CheckpointSigner(secrets / "checkpoint-key" / "checkpoint-ed25519.pem", "ciphercare.example.org/ledger")
    for path in (secrets / "kek" / "kek.key", secrets / "checkpoint-key" / "checkpoint-ed25519.pem"):
        path.chmod(0o440)  # as the kubelet projects a Secret with fsGroup
    script = _init_script(helm_bin).replace("/etc/ciphercare/secrets", str(secrets)).replace(
        "/run/ciphercare/keys", str(keys))
    subprocess.run(["/bin/sh", "-ec", script], check=True, timeout=30)
    for name in ("kek.key", "checkpoint-ed25519.pem"):
        assert (keys / name).stat().st_mode & 0o777 == 0o600, name
    env = {**container_env, "CIPHERCARE_KEK_PATH": str(keys / "kek.key"),
           "CIPHERCARE_LEDGER_SIGNING_KEY_PATH": str(keys / "checkpoint-ed25519.pem"),
           "CIPHERCARE_CHECKPOINT_KEY_PATH": str(keys / "checkpoint-ed25519.pem")}
    cwd = tmp_path / "root"
    cwd.mkdir()
    proc = _run_until_up(env, cwd)
    try:
        grpc_target = f"127.0.0.1:{env['CIPHERCARE_GRPC_PORT']}"
        assert _healthcheck("grpc", grpc_target).returncode == 0
        for service in ("ciphercare.v1.ConsentService", "ciphercare.v1.AccessLogService"):
            assert _healthcheck("grpc", grpc_target, "--service", service).returncode == 0, service
        assert _healthcheck("http", f"http://127.0.0.1:{env['CIPHERCARE_WEB_PORT']}/healthz").returncode == 0
        unknown = _healthcheck("grpc", grpc_target, "--service", "ciphercare.v1.NoSuchService")
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
        assert (keys / "kek.key").read_bytes() == (secrets / "kek" / "kek.key").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert list(cwd.iterdir()) == []  # nothing written outside the data directory (read-only root in the image)
    assert {p.name for p in Path(env["CIPHERCARE_DATA_DIR"]).iterdir()} >= {"ledger.db", "offchain.db"}
    assert not (Path(env["CIPHERCARE_DATA_DIR"]) / "kek.key").exists()  # the mounted KEK was used
    down = _healthcheck("grpc", f"127.0.0.1:{env['CIPHERCARE_GRPC_PORT']}", "--timeout", "2")
    assert down.returncode == 1
    assert down.stderr.count("\n") == 1 and "unhealthy" in down.stderr and "UNAVAILABLE" in down.stderr


def test_a_group_readable_kek_is_refused_at_start(container_env: dict[str, str], tmp_path: Path) -> None:
    """Why the chart copies keys: a KEK straight from a Secret volume (mode 0440 with fsGroup) is refused."""
    kek = tmp_path / "kek.key"
    KeyEncryptionKey.generate().write_new(kek)
    kek.chmod(0o440)
    proc = subprocess.run([*CLI, "up"], env={**container_env, "CIPHERCARE_KEK_PATH": str(kek)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "chmod 600" in proc.stderr


# the health check's TLS path -----------------------------------------------------------------------------------


def _cert(subject: str, issuer_key: Any, issuer: x509.Name | None, key: Any, *, ca: bool,
          san: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj: Any) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A gRPC server with grpc.health.v1 behind mutual TLS, certificates from a CA made here."""
    d = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, None, ca_key, ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _cert("other CA", other_key, None, other_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("ciphercare-api", ca_key, ca.subject, server_key, ca=False, san="ciphercare-api")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("probe", ca_key, ca.subject, client_key, ca=False, san="probe")
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _cert("rogue", other_key, other_ca.subject, rogue_key, ca=False, san="rogue")
    files = {"ca": ca, "other_ca": other_ca, "client": client, "client_key": client_key, "rogue": rogue,
             "rogue_key": rogue_key}
    paths = {}
    for name, obj in files.items():
        paths[name] = d / f"{name}.pem"
        paths[name].write_bytes(_pem(obj))
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("stopping", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    credentials = grpc.ssl_server_credentials([(_pem(server_key), _pem(server))], root_certificates=_pem(ca),
                                              require_client_auth=True)
    port = srv.add_secure_port("127.0.0.1:0", credentials)
    srv.start()
    try:
        yield {"target": f"127.0.0.1:{port}", **paths}
    finally:
        srv.stop(grace=None)


def test_health_check_over_mutual_tls(tls_server: dict[str, Any]) -> None:
    t = tls_server
    ok = ["grpc", t["target"], f"--tls-ca={t['ca']}", f"--tls-cert={t['client']}", f"--tls-key={t['client_key']}",
          "--server-name=ciphercare-api"]
    assert _healthcheck(*ok).returncode == 0
    not_serving = _healthcheck(*ok, "--service", "stopping")
    assert not_serving.returncode == 1 and "NOT_SERVING" in not_serving.stderr


@pytest.mark.parametrize("case", ["plaintext", "no client certificate", "client from another CA", "wrong server CA",
                                  "wrong server name"])
def test_health_check_refuses_what_tls_refuses(tls_server: dict[str, Any], case: str) -> None:
    t = tls_server
    args = {
        "plaintext": ["grpc", t["target"]],
        "no client certificate": ["grpc", t["target"], f"--tls-ca={t['ca']}", "--server-name=ciphercare-api"],
        "client from another CA": ["grpc", t["target"], f"--tls-ca={t['ca']}", f"--tls-cert={t['rogue']}",
                                   f"--tls-key={t['rogue_key']}", "--server-name=ciphercare-api"],
        "wrong server CA": ["grpc", t["target"], f"--tls-ca={t['other_ca']}", f"--tls-cert={t['client']}",
                            f"--tls-key={t['client_key']}", "--server-name=ciphercare-api"],
        "wrong server name": ["grpc", t["target"], f"--tls-ca={t['ca']}", f"--tls-cert={t['client']}",
                              f"--tls-key={t['client_key']}", "--server-name=someone-else"],
    }[case]
    proc = _healthcheck(*args, "--timeout", "3")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("ciphercare-healthcheck: unhealthy: gRPC health")


@pytest.mark.parametrize("args", [["grpc", "no-port"], ["tcp", "host:99999"], ["http", "ftp://x/"],
                                  ["grpc", "127.0.0.1:1", "--tls-cert=/x"], ["grpc", "127.0.0.1:1", "--timeout", "0"]])
def test_health_check_usage_errors_exit_2(args: list[str]) -> None:
    proc = _healthcheck(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip()


def test_tcp_health_check(tls_server: dict[str, Any]) -> None:
    assert _healthcheck("tcp", tls_server["target"]).returncode == 0
    closed = _healthcheck("tcp", f"127.0.0.1:{free_port()}")
    assert closed.returncode == 1 and "unhealthy: TCP" in closed.stderr


def _leaf(name: str, ca_key: Any, ca: x509.Certificate, directory: Path) -> tuple[Path, Path]:
    """A P-256 certificate for ``name`` (server and client usage, as docs/DEPLOY.md makes them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(_pem(cert))
    (directory / "tls.key").write_bytes(_pem(key))
    (directory / "ca.crt").write_bytes(_pem(ca))
    return directory / "tls.crt", directory / "tls.key"


def test_api_serves_mutual_tls_as_the_production_overlay_configures_it(container_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    """The production overlay's TLS settings and its exec probe, rendered by helm, against `ciphercare up`:
    the probe (the pod's own certificate) is SERVING; plaintext and a certificate from another CA are refused;
    /metrics and the web liveness endpoint answer."""
    helm_bin = require_tool("HELM_BIN", "helm", "source scripts/setup/40-helm.sh")
    docs = documents(template(helm_bin, "-f", str(REPO / "helm/ciphercare/ci/production-values.yaml")).stdout)
    api = next(w for w in workloads(docs) if w["metadata"]["name"] == "cc-ciphercare-api")
    main = pod_spec(api)["containers"][0]
    tls_dir = tmp_path / "tls"

    def local(value: str) -> str:
        return value.replace("/etc/ciphercare/tls", str(tls_dir))

    chart_env = {e["name"]: local(e["value"]) for e in main["env"]
                 if e["name"].startswith(("CIPHERCARE_TLS_", "CIPHERCARE_METRICS_"))}
    # the secret settings file, as the operator writes it (docs/DEPLOY.md step 3), at the chart's mount path
    secret_settings = {e["name"]: e["value"] for e in main["env"]}["CIPHERCARE_CONFIG"]
    settings_file = tmp_path / secret_settings.lstrip("/")
    settings_file.parent.mkdir(parents=True)
    database = tmp_path / "offchain-from-secret.db"
    settings_file.write_text(f'database_url = "sqlite:///{database}"\n')
    chart_env["CIPHERCARE_CONFIG"] = str(settings_file)
    assert {"CIPHERCARE_TLS_CERT_PATH", "CIPHERCARE_TLS_KEY_PATH", "CIPHERCARE_TLS_CLIENT_CA_PATH",
            "CIPHERCARE_TLS_CA_PATH", "CIPHERCARE_TLS_SERVER_NAME", "CIPHERCARE_METRICS_ENABLED"} <= set(chart_env)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("node CA", ca_key, None, ca_key, ca=True)
    _leaf(chart_env["CIPHERCARE_TLS_SERVER_NAME"], ca_key, ca, tls_dir)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _cert("someone else's CA", other_key, None, other_key, ca=True)
    rogue_cert, rogue_key = _leaf(chart_env["CIPHERCARE_TLS_SERVER_NAME"], other_key, other_ca, tmp_path / "rogue")
    metrics_port = free_port()
    env = {**container_env, **chart_env, "CIPHERCARE_METRICS_HOST": "127.0.0.1",
           "CIPHERCARE_METRICS_PORT": str(metrics_port)}
    grpc_port = env["CIPHERCARE_GRPC_PORT"]
    probe = [local(arg).replace("127.0.0.1:50051", f"127.0.0.1:{grpc_port}")
             for arg in main["readinessProbe"]["exec"]["command"]]
    assert probe[0] == "ciphercare-healthcheck"
    proc = _run_until_up(env, tmp_path)
    try:
        assert _healthcheck(*probe[1:]).returncode == 0
        plaintext = _healthcheck("grpc", f"127.0.0.1:{grpc_port}", "--timeout", "3")
        assert plaintext.returncode == 1 and "unhealthy" in plaintext.stderr
        rogue = [a for a in probe[1:] if not a.startswith(("--tls-cert", "--tls-key"))]
        refused = _healthcheck(*rogue, f"--tls-cert={rogue_cert}", f"--tls-key={rogue_key}", "--timeout", "3")
        assert refused.returncode == 1
        assert _healthcheck("http", f"http://127.0.0.1:{metrics_port}/metrics").returncode == 0
        liveness = main["livenessProbe"]["httpGet"]["path"]
        assert _healthcheck("http", f"http://127.0.0.1:{env['CIPHERCARE_WEB_PORT']}{liveness}").returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert database.exists()  # the database URL came from the secret settings file


def _wait_for(check: list[str], proc: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout_s)
    while datetime.datetime.now() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        if _healthcheck(*check, "--timeout", "1").returncode == 0:
            return
    raise AssertionError(f"not healthy within {timeout_s} s: {check}")


def test_witness_entrypoint_runs_as_the_production_overlay_configures_it(tmp_path: Path) -> None:
    """`ciphercare witness serve` with the chart's arguments, its policy ConfigMap and its key installed by the
    chart's init script from a group-readable Secret file: healthy by the chart's probe path, serving the key
    from the Secret, stopped cleanly by SIGTERM."""
    from ciphercare.ledger.witness.cosignature import WitnessSigner

    helm_bin = require_tool("HELM_BIN", "helm", "source scripts/setup/40-helm.sh")
    docs = documents(template(helm_bin, "-f", str(REPO / "helm/ciphercare/ci/production-values.yaml")).stdout)
    witness = next(w for w in workloads(docs) if w["metadata"]["name"] == "cc-ciphercare-witness")
    files = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cc-ciphercare-files")
    spec = pod_spec(witness)
    main = spec["containers"][0]
    data, secrets, conf = tmp_path / "data", tmp_path / "secrets" / "witness-key", tmp_path / "files"
    for d in (data, secrets, conf):
        d.mkdir(parents=True)
    (conf / "witness-policy.txt").write_text(files["data"]["witness-policy.txt"])
    name = main["args"][main["args"].index("--name") + 1]
    signer = WitnessSigner(secrets / "witness-ed25519.pem", name, "ed25519")
    (secrets / "witness-ed25519.pem").chmod(0o440)  # as the kubelet projects a Secret with fsGroup
    (init,) = spec["initContainers"]
    script = init["command"][2].replace("/etc/ciphercare/secrets", str(tmp_path / "secrets")).replace(
        "/var/lib/ciphercare", str(data))
    subprocess.run(["/bin/sh", "-ec", script], check=True, timeout=30)
    assert (data / "witness-ed25519.pem").stat().st_mode & 0o777 == 0o600
    port = free_port()
    args = [str(data) if a == "/var/lib/ciphercare" else
            str(conf / "witness-policy.txt") if a == "/etc/ciphercare/files/witness-policy.txt" else
            "127.0.0.1" if a == "0.0.0.0" else str(port) if a == str(main["ports"][0]["containerPort"]) else a
            for a in main["args"]]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probe = main["readinessProbe"]["httpGet"]
        url = f"http://127.0.0.1:{port}{probe['path']}"
        _wait_for(["http", url], proc)
        import urllib.request

        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.read().decode().strip() == signer.vkey  # the key from the Secret, not a new one
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert {p.name for p in data.iterdir()} <= {"witness-ed25519.pem", "state.json"}


def test_chaincode_entrypoint_runs_as_the_production_overlay_configures_it(tmp_path: Path) -> None:
    """`ciphercare chaincode serve` with the chart's CHAINCODE_* environment (TLS, client CA): it listens where
    the chart says, passes the chart's TCP probe and stops cleanly on SIGTERM."""
    helm_bin = require_tool("HELM_BIN", "helm", "source scripts/setup/40-helm.sh")
    docs = documents(template(helm_bin, "-f", str(REPO / "helm/ciphercare/ci/production-values.yaml")).stdout)
    chaincode = next(w for w in workloads(docs) if w["metadata"]["name"] == "cc-ciphercare-chaincode")
    main = pod_spec(chaincode)["containers"][0]
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("node CA", ca_key, None, ca_key, ca=True)
    _leaf("cc-ciphercare-chaincode", ca_key, ca, tmp_path / "tls")
    port = free_port()
    env = {e["name"]: e["value"].replace("/etc/ciphercare/tls", str(tmp_path / "tls")) for e in main["env"]}
    assert env["CHAINCODE_TLS_DISABLED"] == "false" and "CHAINCODE_CLIENT_CA_CERT" in env
    assert env["CHAINCODE_SERVER_ADDRESS"] == f"0.0.0.0:{main['ports'][0]['containerPort']}"
    env["CHAINCODE_SERVER_ADDRESS"] = f"127.0.0.1:{port}"
    proc = subprocess.Popen([*CLI, *main["args"]], env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert main["readinessProbe"]["tcpSocket"]["port"] == "chaincode"
        _wait_for(["tcp", f"127.0.0.1:{port}"], proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


def test_ledger_node_entrypoint_runs_as_the_defaults_configure_it(tmp_path: Path) -> None:
    """`ciphercare ledger serve` with the defaults' arguments and environment (TLS, checkpoint key installed by
    the chart's init script from a group-readable Secret file, trusted MSP certificates from the ConfigMap):
    it listens with TLS where the chart says, passes the chart's TCP probe and stops cleanly on SIGTERM."""
    from ciphercare.ledger.transparency.checkpoint import CheckpointSigner

    helm_bin = require_tool("HELM_BIN", "helm", "source scripts/setup/40-helm.sh")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("HospitalA CA", ca_key, None, ca_key, ca=True)
    docs = documents(template(helm_bin, "--set-string", f"ledger.node.msps.HospitalAMSP={_pem(ca).decode()}").stdout)
    ledger = next(w for w in workloads(docs) if w["metadata"]["name"] == "cc-ciphercare-ledger")
    files = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cc-ciphercare-files")
    spec = pod_spec(ledger)
    main = spec["containers"][0]
    roots = {"/etc/ciphercare/secrets": tmp_path / "secrets", "/run/ciphercare/keys": tmp_path / "keys",
             "/var/lib/ciphercare": tmp_path / "data", "/etc/ciphercare/files": tmp_path / "files",
             "/etc/ciphercare/tls": tmp_path / "tls"}

    def local(value: str) -> str:
        for chart_path, here in roots.items():
            value = value.replace(chart_path, str(here))
        return value

    for here in roots.values():
        here.mkdir(parents=True, exist_ok=True)
    for key, text in files["data"].items():
        (roots["/etc/ciphercare/files"] / key).write_text(text)
    (roots["/etc/ciphercare/secrets"] / "checkpoint-key").mkdir()
    key_file = roots["/etc/ciphercare/secrets"] / "checkpoint-key" / "checkpoint-ed25519.pem"
    signer = CheckpointSigner(key_file, "ciphercare.example.org/ledger")
    key_file.chmod(0o440)
    _leaf("cc-ciphercare-ledger", ca_key, ca, roots["/etc/ciphercare/tls"])
    (init,) = spec["initContainers"]
    subprocess.run(["/bin/sh", "-ec", local(init["command"][2])], check=True, timeout=30)
    assert (roots["/var/lib/ciphercare"] / "msp" / "HospitalAMSP" / "ca-cert.pem").read_bytes() == _pem(ca)
    port = free_port()
    env = {e["name"]: local(e["value"]) for e in main["env"]}
    env.update({"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CIPHERCARE_LEDGER_NODE_HOST": "127.0.0.1",
                "CIPHERCARE_METRICS_ENABLED": "false"})
    args = [str(port) if a == str(main["ports"][0]["containerPort"]) else a for a in main["args"]]
    proc = subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert main["readinessProbe"]["tcpSocket"] == {"port": "gateway"}
        _wait_for(["tcp", f"127.0.0.1:{port}"], proc)
        plaintext = _healthcheck("grpc", f"127.0.0.1:{port}", "--timeout", "3")
        assert plaintext.returncode == 1  # the node speaks TLS only
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert not (roots["/var/lib/ciphercare"] / "ledger-ed25519.pem").exists()  # the Secret's key was used
    assert signer.vkey  # the key the Secret held is a valid checkpoint key
