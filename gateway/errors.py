"""The error policy: every exception a route raises becomes problem+json.

Backend failures keep their meaning (502 bad data, 503 unavailable/circuit open, 504 timeout);
an unexpected exception is a 500 with no detail, logged server-side with its trace id.

``HANDLERS`` is given to Starlette as the app's ``exception_handlers``, its public API. The
gateway's error layer (``gateway.policies.handled_errors``) applies them inside the user
middleware; a mount whose wrapper acts on responses (an experience version's headers) has
Starlette's ``ExceptionMiddleware`` outside that wrapper (:func:`handled_within`), so its
routes' error answers pass through the wrapper; the request envelope answers with the
``Exception`` handler what nothing else handled, then re-raises for the server to log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from system_apis.errors import BackendError, BackendUnavailable, BadBackendData
from system_apis.http.common import InvalidInput

from .problems import problem_kind, problem_response
from .stores.errors import RETRY_AFTER_S, STORE_ERRORS

log = logging.getLogger("trellis.errors")

Handler = Callable[[Request, Exception], Awaitable[Response]]


async def backend_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendError)
    headers: dict[str, str] = {}
    if isinstance(exc, BackendUnavailable) and exc.retry_after:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif exc.status == 409 and exc.backend == "trellis":  # an idempotency key still in progress
        headers["Retry-After"] = str(max(1, round(getattr(exc, "retry_after", 1.0))))
    extra: dict[str, object] = {"backend": exc.backend}
    extra.update(getattr(exc, "problem_extra", dict)())  # e.g. a failed saga step and its undo
    if isinstance(exc, BadBackendData):
        log.warning("bad data from backend", extra={"backend": exc.backend, "detail": exc.detail})
    return problem_response(
        exc.status,
        scope=request.scope,
        problem=problem_kind(exc.problem_type, exc.status),
        detail=exc.detail,
        headers=headers,
        extra=extra,
    )


async def invalid_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    return problem_response(
        exc.status,
        scope=request.scope,
        detail=exc.detail,
        errors=exc.errors,
    )


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.status_code != 404 else "no route for this path"  # in instance
    return problem_response(
        exc.status_code, scope=request.scope, detail=detail, headers=exc.headers
    )


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up before its body was read: its own doing, so an info line without a
    traceback (an error with one would let anyone flood the logs on demand). Nothing can be
    sent; the status is for the access log and metrics (499, as nginx names it)."""
    log.info("client disconnected before its request was read", extra={"path": request.url.path})
    return Response(status_code=499)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """A store is down: 503 with Retry-After, answered (the connection kept) instead of left
    to the server as an unhandled error."""
    log.warning("store unavailable", extra={"path": request.url.path, "error": type(exc).__name__})
    return problem_response(
        503,
        scope=request.scope,
        problem="store-unavailable",
        detail="a store this request needs is unavailable; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return problem_response(
        500, scope=request.scope, detail="an unexpected error occurred; quote the trace_id"
    )


HANDLERS: Mapping[int | type[Exception], Handler] = {
    BackendError: backend_error,
    InvalidInput: invalid_input,
    HTTPException: http_exception,
    ClientDisconnect: client_gone,
    **dict.fromkeys(STORE_ERRORS, store_unavailable),
    Exception: unexpected,
}


def handled_within(app: ASGIApp) -> ASGIApp:
    """``app`` (a wrapper that acts on responses, around a router) under Starlette's
    ``ExceptionMiddleware`` with every handler but the 500 one: Starlette's routes inside apply
    those handlers themselves, so their error answers pass through the wrapper."""
    handlers = {key: h for key, h in HANDLERS.items() if key not in (500, Exception)}
    return ExceptionMiddleware(app, handlers=handlers)
