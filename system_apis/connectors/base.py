"""What a connector is: a vendor's client, its canonical HTTP view, its sandbox, its config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Generic, TypeVar

from starlette.routing import BaseRoute

from ..client import BackendClient
from ..config import BackendConfig
from ..instance_errors import name_instance

if TYPE_CHECKING:
    from aiohttp import web

C = TypeVar("C", bound=BackendClient)


@dataclass(frozen=True, slots=True)
class Connector(Generic[C]):
    """One vendor's implementation of one or more roles.

    ``client`` makes the client of one instance from its config, its base URL and the instance
    name (which names its errors, spans and metrics); ``routes`` is the canonical HTTP view of
    such a client, mounted at ``/system/v1/{instance}``; ``sandbox`` is ``"module:function"``
    of a function returning the aiohttp application that imitates the vendor (imported only when
    a sandbox is served), taking the instance's config when ``sandbox_for_instance`` (a sandbox
    made from the instance's declaration, as the ``rest`` connector's); ``config_schema``
    validates an instance's entry in ``backends.yaml``.

    ``roles`` empty: the connector plays no role of the process layer (``rest``); its instances
    are served at their mounts only.
    """

    name: str
    roles: tuple[str, ...]
    client: Callable[[BackendConfig, str, str], C]
    routes: Callable[[C], list[BaseRoute]]
    sandbox: str | None = None
    config_schema: type[BackendConfig] = BackendConfig
    summary: str = ""
    sandbox_for_instance: bool = False

    def make_client(self, config: BackendConfig, base_url: str, instance: str) -> C:
        """The client of one instance; the errors it raises name the instance."""
        return name_instance(self.client(config, base_url, instance), instance)

    def sandbox_app(self, config: BackendConfig | None = None) -> web.Application:
        """A new instance of the vendor's imitation (of this instance's, given its config)."""
        if self.sandbox is None:
            raise LookupError(f"connector {self.name!r} has no sandbox")
        module, _, attr = self.sandbox.partition(":")
        factory: Callable[..., web.Application] = getattr(import_module(module), attr)
        if self.sandbox_for_instance:
            if config is None:
                raise LookupError(f"connector {self.name!r} serves a sandbox per instance config")
            return factory(config)
        return factory()
