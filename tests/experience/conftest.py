from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import SandboxThread
from tests.process.harness import Gw, running_gateway


@pytest.fixture(scope="module")
async def gw(sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    async with running_gateway(sandbox, tmp_path_factory.mktemp("experience")) as g:
        yield g


@pytest.fixture
async def clean(gw: Gw, clean_sandbox: SandboxThread) -> Gw:
    """The module's gateway over a sandbox with no faults injected."""
    return gw
