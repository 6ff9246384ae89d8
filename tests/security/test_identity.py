"""Identities are compared as people read them: look-alike letters from another script and bidi
controls are refused (422 naming the field), and what only differs in case or width is the same
customer. Non-Latin names in one script are welcome."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import SandboxThread
from tests.process.harness import Gw, running_gateway

CYRILLIC_A = "\u0430"


@pytest.fixture(scope="module")
async def gw(sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    async with running_gateway(sandbox, tmp_path_factory.mktemp("security-identity")) as g:
        yield g


def person(email: str, **names: str) -> dict[str, Any]:
    return {"email": email, "first_name": "Alice", "last_name": "Martin", **names}


async def onboard(gw: Gw, body: dict[str, Any]) -> tuple[int, Any]:
    status, _, answer = await gw.call("POST", "/process/v1/customers", json=body)
    return status, answer


def refused(status: int, body: Any, field: str) -> None:
    assert status == 422, body
    assert [e["path"] for e in body["errors"]] == [field], body


async def test_lookalike_email_is_not_a_new_customer(gw: Gw, clean_sandbox: SandboxThread) -> None:
    local = f"alice{uuid.uuid4().hex[:8]}"
    status, body = await onboard(gw, person(f"{local}@example.com"))
    assert status == 201, body
    # the same address with a Cyrillic a: in the local part, in the domain
    status, body = await onboard(gw, person(f"{CYRILLIC_A}{local[1:]}@example.com"))
    refused(status, body, "email")
    status, body = await onboard(gw, person(f"{local}@ex{CYRILLIC_A}mple.com"))
    refused(status, body, "email")
    # case and width are normalised away: the customer that exists
    status, body = await onboard(gw, person(f"{local.upper()}@EXAMPLE.com"))
    assert status == 409, body
    wide = "".join(chr(ord(c) + 0xFEE0) for c in local)  # fullwidth forms, NFKC gives ASCII
    status, body = await onboard(gw, person(f"{wide}@example.com"))
    assert status == 409, body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("first_name", "Alice\u202e"),  # right-to-left override
        ("first_name", "\u2066Alice\u2069"),  # isolates
        ("last_name", "Mar\u200ftin"),  # right-to-left mark
        ("last_name", "Mar\u061ctin"),  # Arabic letter mark
        ("first_name", f"{CYRILLIC_A}lice"),  # Cyrillic and Latin in one word
        ("last_name", "\u039cartin"),  # Greek capital mu
        ("company", "Acme Gm\u0431H"),
    ],
)
async def test_names_with_bidi_controls_or_mixed_scripts_are_refused(
    gw: Gw, clean_sandbox: SandboxThread, field: str, value: str
) -> None:
    email = f"n{uuid.uuid4().hex[:10]}@example.com"
    status, body = await onboard(gw, person(email, **{field: value}))
    refused(status, body, field)
    status, _, body = await gw.call(
        "POST", "/process/v1/leads", json={**person(email, **{field: value})}
    )
    refused(status, body, field)


@pytest.mark.parametrize(
    ("first", "last"), [("Łukasz", "Wójcik"), ("王", "芳"), ("Зоя", "Иванова"), ("花子", "やまだ")]
)
async def test_names_in_one_script_are_welcome(
    gw: Gw, clean_sandbox: SandboxThread, first: str, last: str
) -> None:
    email = f"w{uuid.uuid4().hex[:10]}@example.com"
    status, body = await onboard(gw, person(email, first_name=first, last_name=last))
    assert status == 201, body
    assert body["first_name"] == first and body["last_name"] == last, body
