"""The app's exception handlers, applied once, inside the user middleware, without a ``send``
wrapper or a ``Request`` per request.

:class:`HandledErrors` takes the place of Starlette's ``ExceptionMiddleware`` at the top of the
app (``Gateway.build_middleware_stack``) with the handlers given to Starlette as the app's
public ``exception_handlers`` and Starlette's documented rules: a handler keyed by status code
first for an ``HTTPException``, else the handler of the nearest class in the exception's MRO;
a plain function handler runs in the thread pool; an exception with a handler raised after the
response started becomes a ``RuntimeError`` for the server-error layer. The ``Exception`` (and
``500``) handler is the request envelope's, not this layer's.

Starlette's ``ExceptionMiddleware`` makes a ``Request`` and a ``send`` wrapper on every request
to know, should the app raise, whether the response started. Here the envelope's
:class:`~gateway.policies.phases.Exchange` already knows (``scope[EXCHANGE_KEY]``), and a
``Request`` is made only for a handler to read. The policies between this layer and the
envelope (CORS, body limit, authentication, rate limit) pass the response start on as they
get it, so the exchange's status is this layer's too.

Route-level handling: Starlette's ``request_response`` applies the handlers of the nearest
``ExceptionMiddleware`` outside it. A mount whose wrapper acts on responses (an experience
version's headers) has Starlette's ``ExceptionMiddleware`` of its own outside that wrapper
(``gateway.layers``), so its routes' error answers pass through the wrapper; elsewhere an
exception reaches this layer, with nothing between that acts on responses.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.policies.scope_keys import EXCHANGE_KEY


class HandledErrors:
    """Pure ASGI. ``handlers``: exception classes and status codes to handlers, as Starlette's
    ``exception_handlers`` (without the ``Exception``/``500`` one)."""

    def __init__(self, app: ASGIApp, handlers: Mapping[Any, Any]) -> None:
        self.app = app
        self.by_status: dict[int, Any] = {k: v for k, v in handlers.items() if isinstance(k, int)}
        self.by_class: dict[type, Any] = {
            k: v for k, v in handlers.items() if not isinstance(k, int)
        }
        # websockets, and a request outside the envelope: Starlette's own layer
        self.other = ExceptionMiddleware(app, handlers=handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = scope.get(EXCHANGE_KEY) if scope["type"] == "http" else None
        if exchange is None:
            await self.other(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            handler = self.handler_for(exc)
            if handler is None:
                raise
            if exchange.status:
                raise RuntimeError(
                    "Caught handled exception, but response already started."
                ) from exc
            request = Request(scope, receive, send)
            if _is_async(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
            if response is not None:
                await response(scope, receive, send)
            exc.__traceback__ = None  # a reused exception instance would keep growing it

    def handler_for(self, exc: Exception) -> Any:
        """The handler for ``exc`` by Starlette's rules, or None."""
        if isinstance(exc, HTTPException):
            handler = self.by_status.get(exc.status_code)
            if handler is not None:
                return handler
        by_class = self.by_class
        for cls in type(exc).__mro__:
            if cls in by_class:
                return by_class[cls]
        return None


def _is_async(handler: Any) -> bool:
    """A coroutine function, or an object or partial whose call is one (Starlette's rule)."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - the call of an object, as Starlette
    )
