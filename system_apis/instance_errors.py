"""A system API's errors name the instance that failed (``crm-eu``), never the vendor module.

A connector's mapping and id checks raise with a module-level label (``IdSyntax``, a mapper's
``BadBackendData``): the same for every instance of that connector, and the vendor's name at
that. The operator reads ``backend`` in a problem+json answer, a log line or a saga's
``not_undone`` to know which configured instance to look at, so every public coroutine and
async iterator of a client made from configuration relabels the errors it raises with its
instance's name.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from .errors import BackendError

__all__ = ["name_instance", "relabel"]

C = TypeVar("C")


def relabel(exc: BackendError, instance: str) -> BackendError:
    """``exc`` naming ``instance`` as its backend (its message too)."""
    if exc.backend != instance:
        exc.backend = instance
        exc.args = (f"{instance}: {exc.detail}",)
    return exc


def _coroutine(method: Callable[..., Awaitable[Any]], instance: str) -> Callable[..., Any]:
    @functools.wraps(method)
    async def named(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except BackendError as exc:
            relabel(exc, instance)
            raise

    return named


def _iterator(method: Callable[..., AsyncIterator[Any]], instance: str) -> Callable[..., Any]:
    @functools.wraps(method)
    async def named(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for item in method(*args, **kwargs):
                yield item
        except BackendError as exc:
            relabel(exc, instance)
            raise

    return named


def name_instance(client: C, instance: str) -> C:
    """``client`` with every public coroutine method and async generator method relabelling
    the ``BackendError`` it raises to ``instance`` (bound on the object: the class is shared)."""
    for attr, member in inspect.getmembers(type(client)):
        if attr.startswith("_"):
            continue
        if inspect.iscoroutinefunction(member):
            setattr(client, attr, _coroutine(getattr(client, attr), instance))
        elif inspect.isasyncgenfunction(member):
            setattr(client, attr, _iterator(getattr(client, attr), instance))
    return client
