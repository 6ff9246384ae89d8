"""Durable operations in the gateway: the sweeper every process runs, and the operator's view.

The sweeper takes over operations whose lease expired (their process died, or an undo failed
and its backoff is over), leases them to this process and finishes or undoes them from the saga
log alone (``process_apis/durable.py:recover``). An undo that keeps failing becomes an operator
task: ``GET /admin/v1/operations?state=stuck``, the record with every step at
``/admin/v1/operations/{id}``, and ``POST /admin/v1/operations/{id}/retry`` once the cause is
fixed. Config: ``gateway.operations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router, request_response

from gateway.oauth.scopes import RequireScopes
from process_apis.durable import OWNER, RECOVERY, DurableConfig, recover
from process_apis.ports import OperationRecord, OpState, SagaLog
from process_apis.service import ProcessApis
from process_apis.web import InvalidInput, QueryParam, json_response, operation
from system_apis.http.common import query_enum, query_int

log = logging.getLogger("trellis.operations")

__all__ = ["OperationsConfig", "Sweeper", "operation_routes"]

TAGS = ("admin",)
PREFIX = "/admin/v1/operations"


class OperationsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_s: float = Field(
        15.0, gt=0, description="A running operation not renewed this long is taken over."
    )
    sweep_interval_s: float = Field(
        2.0, gt=0, description="How often each process looks for operations to take over."
    )
    sweep_batch: int = Field(20, ge=1, le=500, description="Operations taken per sweep.")
    undo_attempts: int = Field(
        5, ge=1, le=100, description="Undo attempts before an operation is stuck for an operator."
    )
    backoff_s: float = Field(2.0, gt=0, description="First wait before retrying a failed undo.")
    backoff_max_s: float = Field(300.0, gt=0, description="Longest wait between undo attempts.")
    retain_s: float = Field(
        86_400.0, gt=0, description="Finished operations are kept this long (the replay window)."
    )

    def durable(self) -> DurableConfig:
        return DurableConfig(
            lease_s=self.lease_s,
            undo_attempts=self.undo_attempts,
            backoff_s=self.backoff_s,
            backoff_max_s=self.backoff_max_s,
        )


class Sweeper:
    """Runs in every gateway process; the log's leases keep two from working on one operation."""

    def __init__(self, apis: ProcessApis, saga_log: SagaLog, config: OperationsConfig) -> None:
        self.apis, self.saga_log, self.config = apis, saga_log, config
        self._task: asyncio.Task[None] | None = None
        self.stuck: Counter[str] = Counter(
            {kind: 0 for kind, rec in RECOVERY.items() if not rec.resumable}
        )
        """Operations this process found stuck, by kind (``trellis_operations_stuck_total``)."""

    async def sweep(self) -> int:
        """One pass: take over what is due and finish or undo it. Answers how many."""
        claimed = await self.saga_log.claim_expired(
            OWNER, self.config.lease_s, self.config.sweep_batch
        )
        for op in claimed:
            try:
                state = await recover(self.apis, self.saga_log, op, self.config.durable())
                if state is OpState.STUCK:
                    self.stuck[op.kind] += 1
                log.info(
                    "operation recovered",
                    extra={"operation": op.id, "kind": op.kind, "state": state.value},
                )
            except Exception as exc:  # the lease expires again: the next sweep retries
                log.error(
                    "operation recovery failed", extra={"operation": op.id, "error": repr(exc)}
                )
        return len(claimed)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # the log is down: try again next interval
                log.warning("operations sweep failed", extra={"error": repr(exc)})
            await asyncio.sleep(self.config.sweep_interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# --- the operator's view ----------------------------------------------------------------------


class StepView(BaseModel):
    name: str
    state: str
    intent: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int


class OperationView(BaseModel):
    id: str
    kind: str
    state: str
    reference: str
    owner: str | None = None
    attempts: int
    detail: str | None = None
    status: int | None = None
    created_at: float
    updated_at: float
    next_attempt_at: float
    steps: list[StepView]


class OperationList(BaseModel):
    items: list[OperationView]


def view_of(op: OperationRecord) -> OperationView:
    return OperationView(
        id=op.id,
        kind=op.kind,
        state=op.state.value,
        reference=op.reference,
        owner=op.owner,
        attempts=op.attempts,
        detail=op.detail,
        status=op.response.status if op.response else None,
        created_at=op.created_at,
        updated_at=op.updated_at,
        next_attempt_at=op.next_attempt_at,
        steps=[
            StepView(
                name=s.name,
                state=s.state.value,
                intent=s.intent,
                result=s.result,
                error=s.error,
                attempts=s.attempts,
            )
            for s in op.steps
        ],
    )


def operation_routes(apis: ProcessApis) -> list[BaseRoute]:
    """``/admin/v1/operations`` and below, behind the ``admin`` scope."""

    @operation(
        "Durable operations, newest first (state=stuck: the operator's tasks)",
        response=OperationList,
        query=(
            QueryParam("state", "running, done, failed, retryable or stuck."),
            QueryParam("limit", "How many (1-500).", type="integer"),
        ),
        errors=(401, 403, 422),
        tags=TAGS,
    )
    async def list_operations(request: Request) -> Response:
        limit = query_int(request, "limit", 50, 1, 500)
        ops = await apis.saga_log.listing(query_enum(request, "state", OpState), limit)
        return json_response(OperationList(items=[view_of(op) for op in ops]))

    async def _get(op_id: str) -> OperationRecord:
        op = await apis.saga_log.get(op_id)
        if op is None:
            raise InvalidInput(f"no operation {op_id[:80]!r}", status=404)
        return op

    @operation(
        "One durable operation with each step's intent, outcome and error",
        response=OperationView,
        errors=(401, 403, 404),
        tags=TAGS,
    )
    async def get_operation(request: Request) -> Response:
        return json_response(view_of(await _get(request.path_params["id"])))

    @operation(
        "Retry a stuck operation's undo now (after fixing its cause)",
        response=OperationView,
        errors=(401, 403, 404, 409),
        tags=TAGS,
    )
    async def retry_operation(request: Request) -> Response:
        op = await _get(request.path_params["id"])
        if op.state is not OpState.STUCK:
            raise InvalidInput(f"operation {op.id} is {op.state.value}, not stuck", status=409)
        await apis.saga_log.finish(op.id, OpState.RUNNING, op.response, op.detail, retry_at=0.0)
        claimed = await apis.saga_log.claim_expired(OWNER, apis.durable.lease_s, 500)
        for other in claimed:  # this one, and any other due: recovered here and now
            await recover(apis, apis.saga_log, other, apis.durable)
        return json_response(view_of(await _get(op.id)))

    one = Router(
        routes=[
            Route("/{id}", get_operation, methods=["GET"]),
            Route("/{id}/retry", retry_operation, methods=["POST"]),
        ]
    )
    listing = functools.update_wrapper(request_response(list_operations), list_operations)
    return [  # before the events' /admin/v1 mount, which would answer these paths 404
        Route(PREFIX, RequireScopes(listing, read=["admin"]), methods=["GET"]),
        Mount(PREFIX, app=RequireScopes(one, read=["admin"])),
    ]
