"""A real Keycloak for the tests: start it from the unpacked distribution, get real tokens from it.

:class:`KeycloakServer` copies the distribution that ``scripts/setup/20-keycloak.sh``
unpacked into a private working directory, writes the realm files into its
``data/import``, starts ``kc.sh start-dev --import-realm`` on loopback ports
(HTTP and management ports chosen free, health enabled, an in-memory database)
and waits on ``/health/ready`` on the management port.

:class:`KeycloakTokens` obtains tokens the way real clients do: the
``client_credentials`` grant for the hospital service accounts and the
authorization-code flow with PKCE (S256) through Keycloak's own login form for
users, so no direct (password) grant is needed anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testkit.process import free_port

REPO = Path(__file__).resolve().parents[2]
REALM_FILE = REPO / "deploy" / "keycloak" / "realm-ciphercare.json"
REALM = "ciphercare"
ROGUE_REALM = "ciphercare-rogue"
AUDIENCE = "ciphercare-api"
HEAP = "-Xms64m -Xmx512m"  # 2 cores / shared machine: keep Keycloak modest
START_TIMEOUT_S = 240.0

# Test-only accounts added by :func:`test_realms` (never in deploy/keycloak).
VISITOR = "visitor"  # signed in, but holds no ciphercare role
EXPIRY_PROBE = "expiry-probe"  # hospital-a service account whose tokens live 1 s
OTHER_API = "other-api-client"  # a hospital-a service account whose tokens are for another API
ROGUE = "rogue"  # a client of another realm (its own signing key)
NO_AUDIENCE = "no-audience-client"  # a hospital-a service account without the audience mapper

_NO_PROXY = urllib.request.ProxyHandler({})


class KeycloakUnavailable(RuntimeError):
    """Keycloak could not be started (or the distribution is missing)."""


def b64url_json(segment: str) -> dict[str, Any]:
    """Decode one JWT segment (no verification; tests only)."""
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def claims_of(token: str) -> dict[str, Any]:
    return b64url_json(token.split(".")[1])


def header_of(token: str) -> dict[str, Any]:
    return b64url_json(token.split(".")[0])


# ------------------------------------------------------------------ the realm


def _mapper(name: str, kind: str, config: Mapping[str, str]) -> dict[str, Any]:
    base = {"access.token.claim": "true", "id.token.claim": "false", "introspection.token.claim": "true"}
    return {"name": name, "protocol": "openid-connect", "protocolMapper": kind, "config": {**base, **config}}


def _service_client(client_id: str, secret: str, audience: str, org: str, **attributes: str) -> dict[str, Any]:
    return {
        "clientId": client_id,
        "enabled": True,
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": secret,
        "serviceAccountsEnabled": True,
        "standardFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "attributes": dict(attributes),
        "protocolMappers": [
            _mapper("audience", "oidc-audience-mapper", {"included.custom.audience": audience}),
            _mapper("org", "oidc-hardcoded-claim-mapper",
                    {"claim.name": "org", "claim.value": org, "jsonType.label": "String"}),
        ],
    }


def test_realms(secret: str) -> list[dict[str, Any]]:
    """The realm files the tests import: the deployed realm plus test-only accounts, and a rogue realm.

    The deployed realm is used unchanged (its ``${ENV}`` placeholders are resolved by
    Keycloak from the environment :class:`KeycloakServer` sets); the additions are a
    user without any ciphercare role, a client whose tokens expire after one second, a
    client whose tokens are for another API, and a second realm with its own keys.
    """
    realm = json.loads(REALM_FILE.read_text())
    realm["clients"] = [
        *realm["clients"],
        _service_client(EXPIRY_PROBE, secret, AUDIENCE, "hospital-a", **{"access.token.lifespan": "1"}),
        _service_client(OTHER_API, secret, "other-api", "hospital-a"),
        {**_service_client(NO_AUDIENCE, secret, AUDIENCE, "hospital-a"),
         "protocolMappers": _service_client(NO_AUDIENCE, secret, AUDIENCE, "hospital-a")["protocolMappers"][1:]},
    ]
    realm["users"] = [
        *realm["users"],
        {"username": f"service-account-{EXPIRY_PROBE}", "enabled": True, "serviceAccountClientId": EXPIRY_PROBE,
         "realmRoles": ["hospital"]},
        {"username": f"service-account-{OTHER_API}", "enabled": True, "serviceAccountClientId": OTHER_API,
         "realmRoles": ["hospital"]},
        {"username": f"service-account-{NO_AUDIENCE}", "enabled": True, "serviceAccountClientId": NO_AUDIENCE,
         "realmRoles": ["hospital"]},
        {"username": VISITOR, "enabled": True, "email": "visitor@example.org", "emailVerified": True,
         "firstName": "Vic", "lastName": "Visitor", "attributes": {"org": ["hospital-a"]},
         "credentials": [{"type": "password", "value": "${CIPHERCARE_KC_DEMO_PASSWORD}", "temporary": False}],
         "realmRoles": ["default-roles-ciphercare"]},
    ]
    rogue = {
        "realm": ROGUE_REALM,
        "enabled": True,
        "sslRequired": "external",
        "roles": {"realm": [{"name": "hospital"}]},
        "clients": [_service_client(ROGUE, secret, AUDIENCE, "hospital-a")],
        "users": [{"username": f"service-account-{ROGUE}", "enabled": True, "serviceAccountClientId": ROGUE,
                   "realmRoles": ["hospital"]}],
    }
    return [realm, rogue]


# ----------------------------------------------------------------- the server


class KeycloakServer:
    """One Keycloak process started from a private copy of the distribution."""

    def __init__(self, dist: Path, workdir: Path, realms: list[dict[str, Any]], env: Mapping[str, str]) -> None:
        self.dist = dist
        self.workdir = workdir
        self.home = workdir / "keycloak"
        self.realms = realms
        self.env = dict(env)
        self.http_port = 0
        self.management_port = 0
        self.log_path = workdir / "keycloak.log"
        self.start_seconds = 0.0
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def issuer(self, realm: str = REALM, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.http_port}/realms/{realm}"

    def token_url(self, realm: str = REALM, host: str = "127.0.0.1") -> str:
        return f"{self.issuer(realm, host)}/protocol/openid-connect/token"

    # -- lifecycle
    def start(self) -> KeycloakServer:
        """Copy, configure and start Keycloak; returns once ``/health/ready`` answers UP."""
        kc_sh = self.dist / "bin" / "kc.sh"
        if not kc_sh.is_file():
            raise KeycloakUnavailable(f"no Keycloak distribution at {self.dist} (bin/kc.sh missing)")
        began = time.monotonic()
        shutil.copytree(self.dist, self.home, symlinks=True)
        _restore_augmentation(self.dist, self.home)
        import_dir = self.home / "data" / "import"
        import_dir.mkdir(parents=True, exist_ok=True)
        for realm in self.realms:
            (import_dir / f"realm-{realm['realm']}.json").write_text(json.dumps(realm, indent=1))
        self.version = (self.home / "version.txt").read_text().strip() if (self.home / "version.txt").exists() else ""
        self.http_port, self.management_port = free_port(), free_port()
        env = {
            **os.environ,
            **self.env,
            "JAVA_OPTS_KC_HEAP": HEAP,
            "KC_BOOTSTRAP_ADMIN_USERNAME": "kc-admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.env.get("CIPHERCARE_KC_DEMO_PASSWORD", secrets.token_urlsafe(12)),
        }
        args = [
            str(self.home / "bin" / "kc.sh"), "start-dev", "--import-realm",
            "--http-host=127.0.0.1", f"--http-port={self.http_port}",
            f"--http-management-port={self.management_port}", "--health-enabled=true",
            "--db=dev-mem",
        ]
        log = self.log_path.open("wb")
        self._proc = subprocess.Popen(  # noqa: S603 - our own command line
            args, cwd=self.home, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        _save_augmentation(self.dist, self.home)
        return self

    def _wait_ready(self, began: float) -> None:
        url = f"http://127.0.0.1:{self.management_port}/health/ready"
        opener = urllib.request.build_opener(_NO_PROXY)
        while time.monotonic() - began < START_TIMEOUT_S:
            if self._proc is not None and self._proc.poll() is not None:
                raise KeycloakUnavailable(
                    f"Keycloak exited with {self._proc.returncode} during start-up:\n{self.log_tail()}"
                )
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200 and json.load(response).get("status") == "UP":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise KeycloakUnavailable(f"Keycloak not ready after {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the Keycloak process group we started (TERM, then KILL after 20 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass

    # -- admin API (rotation tests)
    def admin_token(self) -> str:
        body = urllib.parse.urlencode({
            "grant_type": "password", "client_id": "admin-cli", "username": "kc-admin",
            "password": self.env.get("CIPHERCARE_KC_DEMO_PASSWORD", ""),
        }).encode()
        with urllib.request.build_opener(_NO_PROXY).open(self.token_url("master"), body, timeout=10) as response:
            return str(json.load(response)["access_token"])

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.base_url}/admin/realms/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin_token()}", "Content-Type": "application/json"},
        )
        with urllib.request.build_opener(_NO_PROXY).open(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


_AUGMENTED = ".ciphercare-dev-augmentation"


def _restore_augmentation(dist: Path, home: Path) -> None:
    """Reuse the dev-mode build a previous session left beside the distribution (saves ~20 s).

    Keycloak records its build options in ``lib/quarkus``; if they do not match it
    simply rebuilds, so a stale copy costs time, never correctness.
    """
    saved = dist.parent / f"{dist.name}{_AUGMENTED}"
    if (saved / "build-system.properties").is_file():
        target = home / "lib" / "quarkus"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(saved, target)


def _save_augmentation(dist: Path, home: Path) -> None:
    saved = dist.parent / f"{dist.name}{_AUGMENTED}"
    if saved.exists():
        return
    staging = dist.parent / f".{dist.name}{_AUGMENTED}.{os.getpid()}"
    try:
        shutil.copytree(home / "lib" / "quarkus", staging)
        os.rename(staging, saved)
    except OSError:
        pass  # another session saved it first, or the cache is read-only: only an optimisation
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------- the tokens


class _LoopbackCookies(http.cookiejar.DefaultCookiePolicy):
    """Keycloak marks its session cookies Secure; a browser sends them to http://127.0.0.1 too."""

    def return_ok_secure(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class KeycloakTokens:
    """Real tokens from a running Keycloak, cached until shortly before they expire."""

    REDIRECTS = {"ciphercare-portal": "http://127.0.0.1:3000/callback",
                 "ciphercare-console": "http://127.0.0.1:3001/callback"}

    def __init__(self, server: KeycloakServer, secrets_by_client: Mapping[str, str], password: str) -> None:
        self.server = server
        self.secrets = dict(secrets_by_client)
        self.password = password
        self._cache: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    def client_credentials(self, client_id: str, *, realm: str = REALM, host: str = "127.0.0.1",
                           fresh: bool = False) -> str:
        """An access token for a confidential client's service account."""
        key = ("cc", client_id, realm, host)
        cached = None if fresh else self._cached(key)
        if cached:
            return cached
        body = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
        auth = base64.b64encode(f"{client_id}:{self.secrets[client_id]}".encode()).decode()
        request = urllib.request.Request(self.server.token_url(realm, host), data=body,
                                         headers={"Authorization": f"Basic {auth}"})
        with urllib.request.build_opener(_NO_PROXY).open(request, timeout=15) as response:
            token = str(json.load(response)["access_token"])
        return self._store(key, token)

    def login(self, username: str, client_id: str = "ciphercare-portal") -> dict[str, str]:
        """Sign ``username`` in through Keycloak's login page (authorization code + PKCE S256).

        Returns the token response (``access_token``, ``id_token``, ``refresh_token``).
        """
        jar = http.cookiejar.CookieJar(_LoopbackCookies())
        opener = urllib.request.build_opener(_NO_PROXY, urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
        redirect = self.REDIRECTS[client_id]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        base = f"{self.server.issuer()}/protocol/openid-connect"
        query = urllib.parse.urlencode({
            "client_id": client_id, "response_type": "code", "scope": "openid", "redirect_uri": redirect,
            "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
        })
        with opener.open(f"{base}/auth?{query}", timeout=15) as response:
            page = response.read().decode("utf-8", "replace")
        form = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page)
        if form is None:
            raise RuntimeError(f"no login form in Keycloak's answer for {client_id}")
        credentials = urllib.parse.urlencode({"username": username, "password": self.password}).encode()
        try:
            with opener.open(html.unescape(form.group(1)), credentials, timeout=15) as response:
                raise RuntimeError(f"login of {username} did not redirect (HTTP {response.status})")
        except urllib.error.HTTPError as exc:
            if exc.code not in (302, 303):
                raise
            location = exc.headers["Location"]
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        if params.get("state") != [state] or "code" not in params:
            raise RuntimeError(f"login of {username} redirected without code/state: {params.get('error')}")
        body = urllib.parse.urlencode({
            "grant_type": "authorization_code", "client_id": client_id, "code": params["code"][0],
            "redirect_uri": redirect, "code_verifier": verifier,
        }).encode()
        with opener.open(f"{base}/token", body, timeout=15) as response:
            return {k: str(v) for k, v in json.load(response).items()}

    def user(self, username: str, client_id: str = "ciphercare-portal") -> str:
        """A user's access token (signed in once, cached until near expiry)."""
        key = ("user", username, client_id)
        cached = self._cached(key)
        if cached:
            return cached
        return self._store(key, self.login(username, client_id)["access_token"])

    def _cached(self, key: tuple[str, ...]) -> str | None:
        with self._lock:
            token = self._cache.get(key)
        if token and claims_of(token)["exp"] - time.time() > 60:
            return token
        return None

    def _store(self, key: tuple[str, ...], token: str) -> str:
        with self._lock:
            self._cache[key] = token
        return token
