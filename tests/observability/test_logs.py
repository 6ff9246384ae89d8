"""Structured access lines and redaction, read from the real log stream after the app stops."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider

from gateway.observability import JsonFormatter, configure_logging
from gateway.policies.access_log import LogsConfig
from gateway.policies.redaction import luhn_valid, redact, redact_text
from tests.observability.conftest import StockBackend, running

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwYXJ0bmVyLWEifQ.c2lnbmF0dXJlLWJ5dGVz"


def parse(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]  # every line must be JSON


async def test_one_access_line_per_request_with_every_field(
    tracer_provider: TracerProvider, backend: StockBackend
) -> None:
    async with running(tracer_provider, backend) as h:
        async with httpx.AsyncClient() as http:
            ok = await http.get(f"{h.url}/orders/42", headers={"X-Test-Client": "partner-a"})
            missing = await http.get(f"{h.url}/customers/jane@example.com")
    records = parse(h.log_lines())
    access = [r for r in records if r["logger"] == "trellis.access"]
    assert len(access) == 2

    first = access[0]
    assert set(first) >= {
        "time", "request_id", "trace_id", "client_id", "method", "route", "status",
        "duration_ms", "bytes",
    }  # fmt: skip
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert first["request_id"] == ok.headers["X-Request-ID"]
    assert first["trace_id"] == ok.headers["X-Trace-Id"]
    assert first["client_id"] == "partner-a"
    assert (first["method"], first["route"], first["status"]) == ("GET", "/orders/{order_id}", 200)
    assert first["bytes"] == len(ok.content)
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0

    second = access[1]
    assert (second["route"], second["status"], second["client_id"]) == ("unmatched", 404, None)
    assert second["bytes"] == len(missing.content)
    assert "jane@example.com" not in json.dumps(records)  # the raw path is never logged


async def test_whatever_the_code_logs_is_redacted(
    tracer_provider: TracerProvider, backend: StockBackend
) -> None:
    async with running(tracer_provider, backend) as h:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{h.url}/talk")
    assert r.status_code == 200
    text = "\n".join(h.log_lines())
    for secret in (
        "jane.doe@example.com", "jane@example.com", JWT, "4111 1111 1111 1111",
        "20 7946 0958", "hunter2", "k-1",
    ):  # fmt: skip
        assert secret not in text, secret
    chatty = [r for r in parse(h.log_lines()) if r["logger"] == "trellis.test.chatty"]
    messages = [r["message"] for r in chatty]
    assert messages[0] == "signup from [EMAIL]"
    assert messages[1] == "forwarding token [JWT]"
    assert "[CARD]" in messages[2] and "[PHONE]" in messages[2]
    assert "'password': '[REDACTED]'" in messages[3] and "'user': 'jane'" in messages[3]
    assert chatty[4]["contact"] == {"email": "[EMAIL]"} and chatty[4]["api_key"] == "[REDACTED]"


def test_exception_text_is_redacted_too() -> None:
    stream = io.StringIO()
    handle = configure_logging(LogsConfig(), stream=stream)
    try:
        try:
            raise ValueError("no account for jane@example.com with password=hunter2")
        except ValueError:
            logging.getLogger("trellis.test").exception("lookup failed")
    finally:
        handle.close()
    (record,) = parse(stream.getvalue().splitlines())
    assert record["level"] == "error" and "ValueError" in record["exc"]
    assert "jane@example.com" not in record["exc"] and "hunter2" not in record["exc"]


def test_closing_restores_the_trellis_logger() -> None:
    root = logging.getLogger("trellis")
    before = (root.level, root.propagate, list(root.handlers))
    configure_logging(LogsConfig(), stream=io.StringIO()).close()
    assert (root.level, root.propagate, list(root.handlers)) == before


def test_text_rules_keep_ids_timestamps_and_numbers() -> None:
    harmless = (
        "at 2026-11-27T09:11:16.123Z from 127.0.0.1:8000 trace 4bf92f3577b34da6a3ce929d0e0e4736 "
        "order 1234567 sku 550e8400-e29b-41d4-a716-446655440000 took 12.345 ms, 4111111111111112"
    )
    assert redact_text(harmless) == harmless  # last one fails the Luhn check
    assert redact_text("call (555) 123-4567 or 555.123.4567") == "call [PHONE] or [PHONE]"
    assert redact_text("Authorization: Bearer abc.def-ghijk123") == "Authorization: [REDACTED]"
    assert (
        redact_text("client_secret=s3cr3t&grant_type=x") == "client_secret=[REDACTED]&grant_type=x"
    )
    assert redact_text("4111-1111-1111-1111") == "[CARD]"
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_structured_values_are_redacted_by_key_and_by_content() -> None:
    value = {
        "Authorization": "Basic dXNlcjpwYXNz",
        "nested": {"refresh_token": "r", "card": 4111111111111111, "count": 3},
        "items": ["ok", f"Bearer {JWT}", b"mail a@b.io"],
    }
    assert redact(value) == {
        "Authorization": "[REDACTED]",
        "nested": {"refresh_token": "[REDACTED]", "card": "[CARD]", "count": 3},
        "items": ["ok", "Bearer [JWT]", "mail [EMAIL]"],
    }
    assert redact({"customer_ref": "x"}, extra_keys=("customer",)) == {"customer_ref": "[REDACTED]"}


def test_formatter_output_is_one_json_object_per_record() -> None:
    record = logging.LogRecord("trellis.x", logging.INFO, __file__, 1, "n=%d", (3,), None)
    record.order = {"id": 5}
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "n=3" and out["order"] == {"id": 5} and out["logger"] == "trellis.x"
