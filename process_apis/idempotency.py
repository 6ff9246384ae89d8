"""Run an operation at most once per Idempotency-Key, replaying its first answer afterwards.

Keys are scoped by caller (two clients may pick the same key) and bound to a fingerprint of
the validated body: the same key with another body is the caller's bug, answered 422. A second
request while the first still runs is answered 409 at once rather than held open: the caller
retries and then gets the replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from pydantic import BaseModel
from starlette.requests import Request

from .errors import KeyInProgress, StepFailed
from .ports import BeginState, OperationStore, Outcome, StoredResponse
from .web import InvalidInput

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200

__all__ = [
    "HEADER",
    "attempt_reference",
    "burn_reference",
    "fingerprint",
    "key_of",
    "once",
    "reference_of",
]


def fingerprint(body: BaseModel, *target: str) -> str:
    """A digest of the validated body (normalised, so whitespace or key order do not matter)
    and of the ``target`` path parameters: one key reused for another order is a mismatch."""
    digest = hashlib.sha256(body.model_dump_json().encode())
    for part in target:
        digest.update(b"\x00" + part.encode())
    return digest.hexdigest()


def key_of(request: Request, scope: str, caller: str, required: bool = True) -> str | None:
    """The store key for this request's Idempotency-Key; 400 when required and missing."""
    raw = request.headers.get(HEADER)
    if raw is None or not raw.strip():
        if not required:
            return None
        raise InvalidInput(
            f"the {HEADER} header is required for this operation",
            [{"path": f"header/{HEADER}", "message": "missing", "type": "missing"}],
            status=400,
        )
    if len(raw) > MAX_KEY_LENGTH or not raw.isprintable():
        raise InvalidInput(
            f"the {HEADER} header must be 1-{MAX_KEY_LENGTH} printable characters",
            [{"path": f"header/{HEADER}", "message": "invalid", "type": "value_error"}],
        )
    return f"{scope}:{caller}:{raw.strip()}"


def reference_of(key: str, prefix: str = "TR") -> str:
    """A short stable reference for backends (ERP customer PO is 35 characters at most)."""
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:24].upper()


_ATTEMPTS = "attempts:"
_UNDONE = "_compensated"


async def attempt_reference(store: OperationStore, key: str, prefix: str = "TR") -> str:
    """The backends' reference for this run of ``key``'s operation.

    Stable across a crash (a retry then reuses the reservation, order and invoice the dead
    run made: the backends dedupe on it), but new after a compensated failure: a cancelled
    order or void invoice must not be handed back to the retry as if it were the result.
    """
    undone = (await store.xrefs(_ATTEMPTS + key)).get(_UNDONE, "0")
    return reference_of(f"{key}#{undone}", prefix)


async def burn_reference(store: OperationStore, key: str) -> None:
    """After compensation: the next run of ``key`` gets a fresh reference."""
    undone = int((await store.xrefs(_ATTEMPTS + key)).get(_UNDONE, "0"))
    await store.commit(Outcome(xrefs={_ATTEMPTS + key: {_UNDONE: str(undone + 1)}}))


async def once(
    store: OperationStore,
    key: str,
    fp: str,
    run: Callable[[], Awaitable[StoredResponse]],
    ttl_s: float = 86_400,
) -> tuple[StoredResponse, bool]:
    """The operation's answer and whether it is a replay. ``run`` must commit with ``key``."""
    begun = await store.begin(key, fp, ttl_s)
    if begun.state is BeginState.DONE and begun.response is not None:
        return begun.response, True
    if begun.state is BeginState.MISMATCH:
        raise InvalidInput(
            f"this {HEADER} was already used with a different request body",
            [
                {
                    "path": f"header/{HEADER}",
                    "message": "reused with another body",
                    "type": "idempotency_mismatch",
                }
            ],
        )
    if begun.state is not BeginState.NEW:
        raise KeyInProgress()
    try:
        return await run(), False
    except StepFailed as exc:
        if exc.compensated:
            await burn_reference(store, key)
        await store.release(key)
        raise
    except BaseException:
        await store.release(key)
        raise
