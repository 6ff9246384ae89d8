"""The cursors a ``rest`` instance hands out, whatever its vendor's paging style.

The caller's ``cursor`` is opaque: base64url (no padding) of the vendor's continuation, i.e.
its cursor token, the next page number or offset, or the query string of the next page's URL
(``link`` and ``next_url``; a URL leaving the resource's own path on the base URL is bad data,
never followed with our credentials). A cursor that is not ours is a 400 before any call.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from ..errors import BadBackendData, InvalidInput
from ..ids import CursorSyntax

CURSOR = CursorSyntax(r"[A-Za-z0-9_-]{1,512}")
"""base64url without padding, bounded."""

_NUMBER = re.compile(r"[0-9]{1,9}", re.ASCII)
_PRINTABLE = re.compile(r"[\x20-\x7e]{1,380}", re.ASCII)


def encode(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).rstrip(b"=").decode("ascii")


def _bad(param: str) -> InvalidInput:
    return InvalidInput(
        f"query parameter {param} is not a cursor this API issued",
        [{"path": f"query/{param}", "message": "invalid cursor", "type": "cursor"}],
        status=400,
    )


def decode(cursor: str | None, numeric: bool, param: str = "cursor") -> str | None:
    """The vendor's continuation in ``cursor`` (None: the first page), else a 400 problem."""
    value = CURSOR(cursor, param)
    if value is None:
        return None
    try:
        token = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad(param) from None
    if _PRINTABLE.fullmatch(token) is None or (numeric and _NUMBER.fullmatch(token) is None):
        raise _bad(param)
    return token


def query_of(token: str) -> dict[str, str]:
    """The parameters of a next page's query string (as ``link``/``next_url`` cursors hold)."""
    return dict(parse_qsl(token, keep_blank_values=True))


def next_query(
    backend: str, base_url: str, list_path: str, url: str, secret_params: Collection[str] = ()
) -> str:
    """The query string of a next page's URL, once it is known to be the same list's.

    ``url`` may be relative (to the list's URL). Another origin or another path is refused:
    following it would send our credentials wherever a response pointed. ``secret_params``
    (an API key taken in the query) are left out: vendors echo every parameter in their next
    links, and the continuation becomes the caller's cursor; the client adds them to each call.
    """
    here = f"{base_url}{list_path}"
    target = urlsplit(urljoin(here, url))
    expected = urlsplit(here)
    same = (target.scheme, target.netloc.lower(), target.path.rstrip("/")) == (
        expected.scheme,
        expected.netloc.lower(),
        expected.path.rstrip("/"),
    )
    if not same:
        raise BadBackendData(backend, "the next page's URL leaves the resource", field="next")
    query = target.query
    if secret_params:
        kept = [
            (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in secret_params
        ]
        query = urlencode(kept)
    if len(query) > 380:
        raise BadBackendData(backend, "the next page's URL is too long", field="next")
    return query
