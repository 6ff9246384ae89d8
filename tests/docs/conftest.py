"""One live gateway (with its docs routes) for the documentation tests of this package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import SandboxThread
from tests.docs.live import GatewayThread, gateway_with_docs


@pytest.fixture(scope="session")
def live_gateway(
    sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    gw = GatewayThread(gateway_with_docs(sandbox.base_port, tmp_path_factory.mktemp("docs-gw")))
    gw.start()
    yield gw
    gw.stop()
