"""The client of a ``rest`` instance: one page of a resource, one record, mapped.

Every call goes through ``BackendClient.request`` (timeouts, retries, breaker, bulkhead, pacing,
credentials, spans and metrics named after the instance), like the built-in connectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.parser import ParsedResult

from ..client import BackendClient
from ..config import BackendConfig
from ..errors import BadBackendData
from ..ids import IdSyntax
from ..models import Page
from ..pagination import next_link
from . import paging
from .config import ResourceSpec, RestBackendConfig
from .mapping import Mapper, Output, build_mappers


@dataclass(frozen=True, slots=True)
class Resource:
    """A declared resource with what serving it needs compiled once."""

    name: str
    spec: ResourceSpec
    mapper: Mapper
    ids: IdSyntax
    items: ParsedResult
    record: ParsedResult
    next_field: ParsedResult | None
    has_more: ParsedResult | None

    @property
    def numeric_cursor(self) -> bool:
        return self.spec.paging.style in ("page", "offset")


class RestClient(BackendClient):
    """Reads the declared resources of one ``rest`` instance."""

    def __init__(self, config: BackendConfig, base_url: str, name: str | None = None) -> None:
        if not isinstance(config, RestBackendConfig):
            raise TypeError("a rest instance needs its resources and models (RestBackendConfig)")
        super().__init__(config, base_url, name)
        mappers = build_mappers(self.name, config.models)
        self.resources: Mapping[str, Resource] = {
            rname: Resource(
                name=rname,
                spec=spec,
                mapper=mappers[spec.model],
                ids=IdSyntax(self.name, rname.rstrip("s") or rname, spec.id_pattern),
                items=jmespath.compile(spec.items_path),
                record=jmespath.compile(spec.record_path),
                next_field=_compiled(spec.paging.next_field),
                has_more=_compiled(spec.paging.has_more_field),
            )
            for rname, spec in config.resources.items()
        }

    async def get_one(self, resource: str, ident: str) -> Output:
        """One record by id; an id outside the declared syntax is a 404 without a call."""
        res = self.resources[resource]
        path = res.spec.one_path.replace("{id}", self.segment(res.ids(ident)))
        resp = await self.request("GET", path)
        return res.mapper(res.record.search(resp.json()), record=ident)

    async def list_page(
        self,
        resource: str,
        token: str | None,
        limit: int,
        filters: Mapping[str, str] | None = None,
    ) -> Page[Output]:
        """One page; ``token`` is the vendor's continuation (``paging.decode``), None first."""
        res = self.resources[resource]
        spec, style = res.spec, res.spec.paging.style
        p = spec.paging
        params: dict[str, str | int] = {}
        for name, value in (filters or {}).items():
            params[spec.filters[name].param or name] = value
        if p.limit_param and style != "none":
            params[p.limit_param] = limit
        start = 0
        if style == "cursor" and token is not None:
            params[p.cursor_param] = token
        elif style == "page":
            start = int(token) if token is not None else p.first_page
            params[p.page_param] = start
        elif style == "offset":
            start = int(token) if token is not None else 0
            params[p.offset_param] = start
        elif style in ("link", "next_url") and token is not None:
            params = dict(paging.query_of(token))  # the vendor's next URL says it all
        resp = await self.request("GET", spec.path, params=params)
        body = resp.json()
        raw = res.items.search(body)
        if not isinstance(raw, list):
            raise BadBackendData(self.name, "no list of records", field=spec.items_path)
        items = [res.mapper(record) for record in raw]
        nxt = self._next(res, body, resp.headers.get("Link"), raw, limit, start)
        if nxt is not None and nxt == token:
            raise BadBackendData(self.name, "the next-page cursor does not advance", field="next")
        return Page[Output](items=items, next_cursor=paging.encode(nxt) if nxt else None)

    def _next(
        self,
        res: Resource,
        body: Any,
        link: str | None,
        raw: list[Any],
        limit: int,
        start: int,
    ) -> str | None:
        p = res.spec.paging
        style = p.style
        if style in ("cursor", "next_url"):
            assert res.next_field is not None  # the config requires it for these styles
            value = res.next_field.search(body)
            if value is None or value == "":
                return None
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise BadBackendData(self.name, "next is not a string", field=p.next_field)
            if style == "cursor":
                return str(value)
            return paging.next_query(
                self.name, self.base_url, res.spec.path, str(value), self._auth_query
            )
        if style == "link":
            url = next_link(link)
            if url is None:
                return None
            return paging.next_query(self.name, self.base_url, res.spec.path, url, self._auth_query)
        if style in ("page", "offset"):
            if res.has_more is not None:
                more = res.has_more.search(body)
                if not isinstance(more, bool):
                    raise BadBackendData(self.name, "not a boolean", field=p.has_more_field)
            else:
                more = len(raw) >= limit
            if not more or not raw:
                return None
            return str(start + 1 if style == "page" else start + len(raw))
        return None


def _compiled(expression: str | None) -> ParsedResult | None:
    return jmespath.compile(expression) if expression is not None else None
