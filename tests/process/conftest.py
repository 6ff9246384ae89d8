from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from process_apis.ports import OpState
from system_apis.config import BACKEND_NAMES
from tests.conftest import SandboxThread
from tests.eventually import eventually
from tests.process.harness import Gw, running_gateway

SETTLE_S = 60.0
"""Longest wait for an earlier test's operation to settle: a lease (15 s) and a sweep, or an
undo's backoff once the faults that failed it are cleared."""


@pytest.fixture(scope="module")
async def gw(sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    async with running_gateway(sandbox, tmp_path_factory.mktemp("process")) as g:
        yield g


@pytest.fixture
async def clean(gw: Gw, clean_sandbox: SandboxThread) -> Gw:
    """The module's gateway over a sandbox with no faults injected, once no operation an earlier
    test left is running (the sweeper would finish or undo it during this test, and its calls
    would count as this test's), with the backends' hit counters zeroed after that."""

    async def settled() -> bool:
        return not await gw.process.saga_log.listing(OpState.RUNNING, 1)

    await eventually(settled, timeout=SETTLE_S, message="an earlier test's operation settled")
    for name in BACKEND_NAMES:
        await clean_sandbox.reset_hits(name)
    return gw
