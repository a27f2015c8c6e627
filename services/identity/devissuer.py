"""The built-in development identity provider (the embedded default IdP).

It is a stand-in for Keycloak, shaped so that swapping in a real Keycloak realm
changes configuration only:

* :class:`DevIssuer` keeps an RSA-2048 signing key (generated on first start,
  PEM, file mode 0600) whose ``kid`` is the RFC 7638 JWK thumbprint, and issues
  tokens in exactly Keycloak's access-token shape (``realm_access.roles``,
  ``azp``, ``typ: Bearer``, ...).
* :class:`DevIssuerServer` serves Keycloak's realm paths over HTTP:
  ``/realms/<realm>/.well-known/openid-configuration``,
  ``/realms/<realm>/protocol/openid-connect/certs`` (JWKS) and
  ``/realms/<realm>/protocol/openid-connect/token`` (``client_credentials`` for
  the dev clients configured in the issuer, e.g. ``hospital-a``).

Development only: plain HTTP, static client secrets, no user login.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

if TYPE_CHECKING:
    from ciphercare.services.platform.settings import Settings

log = logging.getLogger(__name__)

RSA_BITS = 2048
# Keycloak 26's scope strings and housekeeping claims (observed on real tokens, see tests/keycloak).
DEFAULT_SCOPE = "openid email profile"
SERVICE_ACCOUNT_SCOPE = "email profile"
#: The roles of Keycloak's ``account`` client that every realm's default role grants a user.
ACCOUNT_CLIENT_ROLES = ("manage-account", "manage-account-links", "view-profile")
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}
_MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True)
class DevClient:
    """A confidential dev client for the ``client_credentials`` grant."""

    secret: str
    roles: frozenset[str]
    org: str
    pid: str | None = None


#: Dev clients every DevIssuer knows unless told otherwise (well-known secrets: development only).
DEFAULT_DEV_CLIENTS: Mapping[str, DevClient] = {
    "hospital-a": DevClient(secret="hospital-a-secret", roles=frozenset({"hospital"}), org="hospital-a"),
    "hospital-b": DevClient(secret="hospital-b-secret", roles=frozenset({"hospital"}), org="hospital-b"),
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _compact_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rsa_public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """The RFC 7517 members of an RSA public key (``kty``, ``n``, ``e``)."""
    numbers = public_key.public_numbers()
    return {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}


def jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of an RSA or EC public JWK."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}.get(jwk.get("kty", ""))
    if required is None:
        raise ValueError("thumbprint supported for RSA and EC keys only")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass
class _SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str
    public_jwk: dict[str, str] = field(default_factory=dict)


def _make_signing_key(private_key: rsa.RSAPrivateKey) -> _SigningKey:
    jwk = rsa_public_jwk(private_key.public_key())
    kid = jwk_thumbprint(jwk)
    return _SigningKey(private_key, kid, {"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", **jwk})


def _write_new_key(path: Path, pem: bytes, *, replace: bool) -> bool:
    """Write ``pem`` to ``path`` with mode 0600 atomically. Without ``replace`` an existing file wins."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic create-if-absent: a concurrent starter's key wins
        except FileExistsError:
            return False
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if _write_new_key(path, pem, replace=False):
            log.info("dev issuer: generated a new RSA-%d signing key at %s", RSA_BITS, path)
            return key
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "dev issuer key %s is accessible by group/others (mode %o); it should be 0600", path, mode
        )
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey) or loaded.key_size < RSA_BITS:
        raise ValueError(f"dev issuer key {path} is not an RSA private key of at least {RSA_BITS} bits")
    return loaded


class DevIssuer:
    """Development token issuer with Keycloak's access-token shape."""

    def __init__(
        self,
        key_path: Path | str,
        issuer: str,
        audience: str,
        *,
        clients: Mapping[str, DevClient] | None = None,
        token_ttl_s: int = 3600,
    ) -> None:
        parsed = urllib.parse.urlsplit(issuer)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("issuer must be an absolute http(s) URL")
        self.key_path = Path(key_path)
        self._issuer = issuer.rstrip("/")
        self.audience = audience
        self.clients: Mapping[str, DevClient] = dict(DEFAULT_DEV_CLIENTS if clients is None else clients)
        self.token_ttl_s = int(token_ttl_s)
        self._lock = threading.Lock()
        self._active = _make_signing_key(_load_or_create_key(self.key_path))
        self._retired: list[_SigningKey] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clients: Mapping[str, DevClient] | None = None
    ) -> DevIssuer:
        """A DevIssuer for ``settings.resolved_oidc_issuer`` / ``oidc_audience``."""
        return cls(
            settings.resolved_dev_issuer_key_path,
            settings.resolved_oidc_issuer,
            settings.oidc_audience,
            clients=clients,
            token_ttl_s=settings.dev_token_ttl_s,
        )

    # ------------------------------------------------------------- properties

    @property
    def issuer(self) -> str:
        """The ``iss`` value (``http://host:port/realms/<realm>``)."""
        return self._issuer

    @property
    def realm(self) -> str:
        """The realm name from the issuer path (``/realms/<realm>``), ``""`` if none."""
        parts = urllib.parse.urlsplit(self._issuer).path.strip("/").split("/")
        return parts[1] if len(parts) == 2 and parts[0] == "realms" else ""

    @property
    def kid(self) -> str:
        """``kid`` of the active signing key (its RFC 7638 thumbprint)."""
        return self._active.kid

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The active public key."""
        return self._active.private_key.public_key()

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document: the active key first, then keys retired by :meth:`rotate_key`."""
        with self._lock:
            keys = [self._active, *self._retired]
        return {"keys": [dict(k.public_jwk) for k in keys]}

    def rotate_key(self) -> str:
        """Make a fresh key active (persisted to ``key_path``); old keys stay published.

        Returns the new ``kid``. Retired keys are kept in memory only (until restart).
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_new_key(self.key_path, pem, replace=True)
        with self._lock:
            self._retired.insert(0, self._active)
            self._active = _make_signing_key(key)
        return self._active.kid

    def _set_issuer(self, issuer: str) -> None:
        self._issuer = issuer.rstrip("/")

    # ---------------------------------------------------------------- tokens

    def issue(
        self,
        subject: str,
        roles: Iterable[str],
        org: str | None,
        pid: str | None = None,
        client_id: str = "ciphercare-dev",
        ttl_s: int = 3600,
        extra_claims: Mapping[str, Any] | None = None,
        *,
        username: str | None = None,
    ) -> str:
        """A signed RS256 user access token in Keycloak 26's shape (authorization-code flow).

        Claims, in Keycloak's order: ``exp``, ``iat``, ``auth_time``, ``jti``, ``iss``,
        ``aud`` (the API audience plus Keycloak's ``account`` client), ``sub``,
        ``typ: Bearer``, ``azp``, ``sid``, ``acr``, ``realm_access`` (with the realm's
        default roles), ``resource_access`` (the ``account`` client's roles), ``scope``,
        ``email_verified``, then ``org`` / ``pid`` when given and ``preferred_username``.
        ``extra_claims`` are applied last and may override any claim; a value of ``None``
        removes the claim (tests use this to build broken tokens).
        """
        now = int(time.time())
        claims: dict[str, Any] = {
            "exp": now + int(ttl_s),
            "iat": now,
            "auth_time": now,
            "jti": f"onrtac:{uuid.uuid4()}",
            "iss": self._issuer,
            "aud": [self.audience, "account"],
            "sub": subject,
            "typ": "Bearer",
            "azp": client_id,
            "sid": str(uuid.uuid4()),
            "acr": "1",
            "realm_access": {"roles": self._realm_roles(roles)},
            "resource_access": {"account": {"roles": list(ACCOUNT_CLIENT_ROLES)}},
            "scope": DEFAULT_SCOPE,
            "email_verified": False,
        }
        if org:
            claims["org"] = org
        if pid is not None:
            claims["pid"] = pid
        claims["preferred_username"] = username or subject
        return self._sign(claims, extra_claims)

    def issue_client_credentials(self, client_id: str, scope: str | None = None) -> tuple[str, int]:
        """A service-account token for a configured dev client (no secret check); returns (token, ttl).

        Keycloak 26's client-credentials shape: a single-string ``aud``, only the
        service account's own realm roles, no ``sid``/``auth_time``, ``org`` from the
        client's hardcoded-claim mapper.
        """
        client = self.clients[client_id]
        now = int(time.time())
        ttl = self.token_ttl_s
        claims: dict[str, Any] = {
            "exp": now + ttl,
            "iat": now,
            "jti": f"trrtcc:{uuid.uuid4()}",
            "iss": self._issuer,
            "aud": self.audience,
            # Keycloak's service-account user id is a stable UUID per client.
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self._issuer}/service-account/{client_id}")),
            "typ": "Bearer",
            "azp": client_id,
            "acr": "1",
            "realm_access": {"roles": sorted(client.roles)},
            "scope": scope or SERVICE_ACCOUNT_SCOPE,
            "email_verified": False,
            "org": client.org,
        }
        if client.pid is not None:
            claims["pid"] = client.pid
        claims["preferred_username"] = f"service-account-{client_id}"
        return self._sign(claims, None), ttl

    def _realm_roles(self, roles: Iterable[str]) -> list[str]:
        # Keycloak always adds the realm's default roles; the verifier ignores them.
        defaults = [f"default-roles-{self.realm or 'ciphercare'}", "offline_access", "uma_authorization"]
        explicit = sorted(set(roles))
        return explicit + [r for r in defaults if r not in explicit]

    def _sign(self, claims: dict[str, Any], extra_claims: Mapping[str, Any] | None) -> str:
        if extra_claims:
            for name, value in extra_claims.items():
                if value is None:
                    claims.pop(name, None)
                else:
                    claims[name] = value
        active = self._active
        header = {"alg": "RS256", "typ": "JWT", "kid": active.kid}
        signing_input = f"{_b64url(_compact_json(header))}.{_b64url(_compact_json(claims))}".encode("ascii")
        signature = active.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode('ascii')}.{_b64url(signature)}"

    def check_client(self, client_id: str, secret: str) -> bool:
        """Constant-time check of a dev client's secret."""
        client = self.clients.get(client_id)
        expected = client.secret if client is not None else secrets.token_hex(16)
        ok = hmac.compare_digest(expected.encode("utf-8"), secret.encode("utf-8"))
        return ok and client is not None


# ---------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: DevIssuerServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ciphercare-dev-issuer"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("dev issuer %s: %s", self.address_string(), format % args)

    # -- helpers
    def _send_json(
        self, status: int, body: Mapping[str, Any], extra: Mapping[str, str] | None = None
    ) -> None:
        payload = _compact_json(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store" if self._is_token_path() else "no-cache")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _oauth_error(
        self, status: int, error: str, description: str, extra: Mapping[str, str] | None = None
    ) -> None:
        self._send_json(status, {"error": error, "error_description": description}, extra)

    def _route(self) -> str | None:
        path = urllib.parse.urlsplit(self.path).path
        prefix = self.server.owner.realm_path
        if not path.startswith(prefix + "/"):
            return None
        return path[len(prefix) :]

    def _is_token_path(self) -> bool:
        return self._route() == "/protocol/openid-connect/token"

    # -- verbs
    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        owner = self.server.owner
        route = self._route()
        if route == "/.well-known/openid-configuration":
            owner._count("discovery")
            self._send_json(HTTPStatus.OK, owner.discovery_document())
        elif route == "/protocol/openid-connect/certs":
            owner._count("jwks")
            self._send_json(HTTPStatus.OK, owner.issuer.jwks())
        elif owner.login is not None and owner.login.handle_get(self, route):
            pass  # browser login (services/identity/devlogin.py)
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "Resource not found"})

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        if not self._is_token_path():
            if self.server.owner.login is not None and self.server.owner.login.handle_post(self, self._route()):
                return
            self._drain()
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "Resource not found"})
            return
        self.server.owner._count("token")
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_FORM_BYTES:
            self.close_connection = True
            self._oauth_error(HTTPStatus.BAD_REQUEST, "invalid_request", "Bad Content-Length")
            return
        body = self.rfile.read(length)
        if ctype != "application/x-www-form-urlencoded":
            self._oauth_error(
                HTTPStatus.BAD_REQUEST, "invalid_request", "Content-Type must be form-urlencoded"
            )
            return
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            self._oauth_error(HTTPStatus.BAD_REQUEST, "invalid_request", "Body is not UTF-8")
            return
        fields = {k: v[0] for k, v in form.items() if len(v) == 1}
        if any(len(v) != 1 for v in form.values()):
            self._oauth_error(HTTPStatus.BAD_REQUEST, "invalid_request", "Duplicate form parameter")
            return
        self._token(fields)

    def _drain(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if 0 < length <= _MAX_FORM_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _client_credentials(self, fields: Mapping[str, str]) -> tuple[str, str] | None:
        auth = self.headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            cid, sep, secret = decoded.partition(":")
            if not sep:
                return None
            return urllib.parse.unquote_plus(cid), urllib.parse.unquote_plus(secret)
        if "client_id" in fields and "client_secret" in fields:
            return fields["client_id"], fields["client_secret"]
        return None

    def _token(self, fields: Mapping[str, str]) -> None:
        issuer = self.server.owner.issuer
        grant = fields.get("grant_type")
        if not grant:
            self._oauth_error(HTTPStatus.BAD_REQUEST, "invalid_request", "Missing form parameter: grant_type")
            return
        if grant != "client_credentials":
            if self.server.owner.login is not None and self.server.owner.login.handle_token(self, grant, fields):
                return
            self._oauth_error(HTTPStatus.BAD_REQUEST, "unsupported_grant_type", "Unsupported grant_type")
            return
        creds = self._client_credentials(fields)
        if creds is None or not issuer.check_client(*creds):
            self._oauth_error(
                HTTPStatus.UNAUTHORIZED,
                "invalid_client",
                "Invalid client or Invalid client credentials",
                {"WWW-Authenticate": f'Basic realm="{issuer.realm}"'},
            )
            return
        token, ttl = issuer.issue_client_credentials(creds[0], fields.get("scope") or None)
        self._send_json(
            HTTPStatus.OK,
            {
                "access_token": token,
                "expires_in": ttl,
                "refresh_expires_in": 0,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "scope": fields.get("scope") or SERVICE_ACCOUNT_SCOPE,
            },
            {"Pragma": "no-cache"},
        )


class DevIssuerServer:
    """Serves a :class:`DevIssuer` on Keycloak's realm paths from a daemon thread.

    The issuer URL must be ``http://<host>:<port>/realms/<realm>`` for the
    address served. With ``port=0`` an ephemeral port is bound on :meth:`start`
    and the issuer URL (hence the tokens' ``iss``) is rewritten to the actual port.
    """

    def __init__(self, issuer: DevIssuer, host: str = "127.0.0.1", port: int = 8089) -> None:
        parsed = urllib.parse.urlsplit(issuer.issuer)
        if parsed.scheme != "http":
            raise ValueError("the dev issuer serves plain http; its issuer URL must start with http://")
        if not issuer.realm or parsed.query or parsed.fragment:
            raise ValueError("the dev issuer URL path must be /realms/<realm> (Keycloak's layout)")
        url_host = parsed.hostname or ""
        if host not in _WILDCARD_HOSTS and url_host.lower() != host.lower():
            raise ValueError(f"issuer URL host {url_host!r} does not match the dev issuer bind host {host!r}")
        if port != 0 and (parsed.port or 80) != port:
            raise ValueError(f"issuer URL port {parsed.port or 80} does not match the dev issuer port {port}")
        self.issuer = issuer
        self.host = host
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        #: Optional browser login (services/identity/devlogin.DevLogin), attached by the wiring before start().
        self.login: Any = None

    @classmethod
    def for_issuer(cls, issuer: DevIssuer, settings: Settings) -> DevIssuerServer:
        """A (not yet started) server for ``issuer`` on ``settings.dev_issuer_host:dev_issuer_port``."""
        return cls(issuer, settings.dev_issuer_host, settings.dev_issuer_port)

    from_settings = for_issuer

    # ------------------------------------------------------------ lifecycle

    def start(self) -> DevIssuerServer:
        """Bind and serve in a daemon thread; returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("dev issuer server already started")
        server_cls = _Server6 if ":" in self.host else _Server
        httpd = server_cls((self.host, self._port), _Handler)
        httpd.owner = self
        self._port = httpd.server_address[1]
        parsed = urllib.parse.urlsplit(self.issuer.issuer)
        url_port = parsed.port or 80
        if url_port != self._port:
            host = parsed.hostname or self.host
            netloc = f"[{host}]:{self._port}" if ":" in host else f"{host}:{self._port}"
            self.issuer._set_issuer(urllib.parse.urlunsplit(parsed._replace(netloc=netloc)))
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="dev-issuer-http", daemon=True)
        self._thread.start()
        log.info("dev issuer serving %s", self.issuer.issuer)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> DevIssuerServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The bound port (the actual one after :meth:`start` with port 0)."""
        return self._port

    @property
    def issuer_url(self) -> str:
        return self.issuer.issuer

    @property
    def realm_path(self) -> str:
        return urllib.parse.urlsplit(self.issuer.issuer).path.rstrip("/")

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer_url}/protocol/openid-connect/certs"

    @property
    def token_url(self) -> str:
        return f"{self.issuer_url}/protocol/openid-connect/token"

    def discovery_document(self) -> dict[str, Any]:
        """The OIDC discovery document (the subset this server implements)."""
        base = self.issuer_url
        document: dict[str, Any] = {
            "issuer": base,
            "token_endpoint": self.token_url,
            "jwks_uri": self.jwks_url,
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "profile", "email"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "azp", "realm_access", "org", "pid"],
        }
        if self.login is not None:
            document.update(self.login.discovery_additions(base))
        return document

    # --------------------------------------------------------------- stats

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self._counts[what] = self._counts.get(what, 0) + 1

    def request_count(self, what: str) -> int:
        """Requests served for ``"jwks"``, ``"discovery"`` or ``"token"`` (tests, metrics)."""
        with self._counts_lock:
            return self._counts.get(what, 0)
