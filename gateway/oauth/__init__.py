"""OAuth 2.0 at the gateway: token issuance (client credentials), bearer validation, scopes.

The app assembles :class:`OAuth` (routes, middleware, lifespan) and protects routes with
:class:`RequireScopes` / :func:`requires`; lower layers read only :mod:`gateway.principal`.
"""

from gateway.oauth.component import OAuth
from gateway.oauth.config import ClientConfig, ExternalIssuer, OAuthConfig
from gateway.oauth.scopes import RequireScopes, requires

__all__ = ["ClientConfig", "ExternalIssuer", "OAuth", "OAuthConfig", "RequireScopes", "requires"]
