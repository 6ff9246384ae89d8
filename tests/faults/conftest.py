from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import SandboxThread
from tests.process.harness import Gw, running_gateway

OPERATIONS = {  # a quick sweeper, so takeovers happen within a test's patience
    "lease_s": 2,
    "sweep_interval_s": 0.1,
    "backoff_s": 0.1,
    "backoff_max_s": 0.5,
    "undo_attempts": 3,
}


@pytest.fixture(scope="module")
async def gw(sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    async with running_gateway(
        sandbox, tmp_path_factory.mktemp("faults"), gateway={"operations": OPERATIONS}
    ) as g:
        yield g


@pytest.fixture
async def clean(gw: Gw, clean_sandbox: SandboxThread) -> Gw:
    return gw
