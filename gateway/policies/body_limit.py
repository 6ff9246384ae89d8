"""Refuse request bodies over the configured size with 413, before the app reads them whole.

Checks ``Content-Length`` up front and counts streamed (chunked) bytes as they arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..problems import problem_response

_NO_BODY = frozenset({"GET", "HEAD"})


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # the usual request needs no counting: the app's own coroutine is returned, so the
        # request's coroutine chain has no frame of this policy
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        framed = chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    response = problem_response(400, scope=scope, detail="invalid Content-Length")
                    return response(scope, receive, send)
                if declared > self.max_bytes:
                    return self._refuse(scope, receive, send)
                framed = True
            elif name == b"transfer-encoding":
                chunked = True
        if framed or (scope["method"] in _NO_BODY and not chunked):
            # a body framed by Content-Length is read no further by the server (the declared
            # size was checked above); a GET or HEAD with neither has none: nothing to count
            return self.app(scope, receive, send)
        return self._counting(scope, receive, send)

    async def _counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A streamed body: counted as it arrives, refused with 413 once over the limit."""
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            scope=scope,
            detail=f"the request body exceeds the limit of {self.max_bytes} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
