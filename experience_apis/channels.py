"""Every channel's views, per configured version, wrapped in that version's lifecycle.

Scopes are the gateway's business (it wraps each app returned here); this module knows which
views make a channel and which versions of it exist.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute, Router
from starlette.types import ASGIApp

from process_apis.service import ProcessApis

from . import mobile, partner, support, web
from .config import CHANNELS, ExperienceConfig
from .versioning import Versioned

RouteFactory = Callable[[ProcessApis, ExperienceConfig], list[BaseRoute]]

VIEWS: dict[str, RouteFactory] = {
    "web": web.routes,
    "mobile": mobile.routes,
    "support": support.routes,
    "partner": partner.routes,
}

__all__ = ["CHANNELS", "VIEWS", "channel_apps"]


def channel_apps(apis: ProcessApis, config: ExperienceConfig) -> dict[str, dict[str, ASGIApp]]:
    """channel -> version -> ASGI app, for ``/experience/{channel}/{version}``."""
    out: dict[str, dict[str, ASGIApp]] = {}
    for channel in CHANNELS:
        routes = VIEWS[channel](apis, config)
        versions = config.channel(channel).versions
        out[channel] = {
            version: Versioned(Router(routes=routes), channel, version, policy)
            for version, policy in versions.items()
        }
    return out
