"""The ``rest`` connector, registered under the ``trellis.connectors`` entry point group."""

from __future__ import annotations

from ..connectors.base import Connector
from . import http
from .client import RestClient
from .config import RestBackendConfig

rest: Connector[RestClient] = Connector(
    name="rest",
    roles=(),
    client=RestClient,
    routes=http.routes,
    sandbox="system_apis.rest.sandbox:create_app",
    sandbox_for_instance=True,
    config_schema=RestBackendConfig,
    summary="Any JSON REST API, declared in backends.yaml: resources, paging, mapped models",
)
