"""The error policy: every exception a route raises becomes problem+json.

Backend failures keep their meaning (502 bad data, 503 unavailable/circuit open, 504 timeout);
an unexpected exception is a 500 with no detail, logged server-side with its trace id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette._utils import is_async_callable  # Starlette's own test (partials, __call__)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from system_apis.errors import BackendError, BackendUnavailable, BadBackendData
from system_apis.http.common import InvalidInput

from .policies.scope_keys import RESPONSE_STATUS_KEY
from .problems import problem_kind, problem_response

log = logging.getLogger("trellis.errors")

Handler = Callable[[Request, Exception], Awaitable[Response]]


async def backend_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendError)
    headers: dict[str, str] = {}
    if isinstance(exc, BackendUnavailable) and exc.retry_after:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    elif exc.status == 409 and exc.backend == "trellis":  # an idempotency key still in progress
        headers["Retry-After"] = "1"
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
    detail = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    return problem_response(
        exc.status_code, scope=request.scope, detail=detail, headers=exc.headers
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
    Exception: unexpected,
}


class ErrorHandlers:
    """Pure ASGI, innermost, around the router: the handlers above (all but the 500 one, which
    the request envelope applies) turn a route's exception into its response.

    Starlette's ``ExceptionMiddleware`` with the same handlers and the same rules (a status
    handler for an ``HTTPException`` first, then the nearest class in the exception's MRO,
    Starlette's default ``HTTPException`` and ``WebSocketException`` handlers included; a
    handled exception after the response started becomes a ``RuntimeError``), without its
    per-request ``Request``, closures and ``send`` wrapper: whether the response started is
    read from the envelope's ``scope[RESPONSE_STATUS_KEY]``. Innermost, so the user middleware
    (CORS) acts on the answers as on any response. Without the envelope, and for websockets,
    Starlette's own middleware does the work.
    """

    def __init__(self, app: ASGIApp, handlers: Mapping[Any, Any]) -> None:
        self.app = app
        middleware = ExceptionMiddleware(app, handlers=handlers)
        self.starlette: ASGIApp = middleware
        self._classes = middleware._exception_handlers
        self._statuses = middleware._status_handlers
        self._for_routes = (self._classes, self._statuses)
        # what route-level handling (Starlette's request_response, kept by routes with
        # middleware of their own) reads from the scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = scope.get(RESPONSE_STATUS_KEY)
        if status is None or scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        scope["starlette.exception_handlers"] = self._for_routes
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if not await self.answer(exc, scope, receive, send, status[0] != 0):
                raise

    async def answer(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send, started: bool
    ) -> bool:
        """Send the handler's response for ``exc``; False when no handler takes it."""
        handler = self._handler_for(exc)
        if handler is None:
            return False
        if started:
            raise RuntimeError("Caught handled exception, but response already started.") from exc
        request = Request(scope, receive, send)
        if is_async_callable(handler):
            response = await handler(request, exc)
        else:
            response = await run_in_threadpool(handler, request, exc)
        if response is not None:
            await response(scope, receive, send)
        exc.__traceback__ = None  # a reused exception instance would grow its traceback
        return True

    def _handler_for(self, exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            found = self._statuses.get(exc.status_code)
            if found is not None:
                return found
        classes = self._classes
        for cls in type(exc).__mro__:
            if cls in classes:
                return classes[cls]
        return None


def split_handlers(
    handlers: Mapping[Any, Any],
) -> tuple[Any, dict[Any, Any]]:
    """(the 500 handler, the others), as Starlette splits an app's exception handlers."""
    server_error = None
    others: dict[Any, Any] = {}
    for key, value in handlers.items():
        if key in (500, Exception):
            server_error = value
        else:
            others[key] = value
    return server_error, others
