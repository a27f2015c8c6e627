"""Authentication and authorisation: OIDC bearer tokens, the role table, the gRPC interceptor.

This package only re-exports the public names of its submodules.
"""

from ciphercare.services.identity.devissuer import DevClient, DevIssuer, DevIssuerServer
from ciphercare.services.identity.interceptor import (
    AuthInterceptor,
    NoPrincipalError,
    RejectedCall,
    current_principal,
    principal_or_none,
)
from ciphercare.services.identity.jwks import JwksCache, JwksError
from ciphercare.services.identity.rules import ACCESS_RULES, KNOWN_ROLES, RULES, AccessRule, rule_for
from ciphercare.services.identity.tokens import AuthError, TokenVerifier

__all__ = [
    "ACCESS_RULES",
    "KNOWN_ROLES",
    "RULES",
    "AccessRule",
    "AuthError",
    "AuthInterceptor",
    "DevClient",
    "DevIssuer",
    "DevIssuerServer",
    "JwksCache",
    "JwksError",
    "NoPrincipalError",
    "RejectedCall",
    "TokenVerifier",
    "current_principal",
    "principal_or_none",
    "rule_for",
]
