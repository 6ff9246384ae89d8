"""The Config page's rows: where each value came from, and secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.console.settings_view import config_rows
from gateway.settings import DEFAULT_CONFIG_DIR, load_settings


def test_sources_and_redaction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRELLIS_GATEWAY__MAX_BODY_BYTES", "2097152")
    monkeypatch.setenv("TRELLIS_ERP_API_KEY", "erp-key-from-env-0123456789")
    monkeypatch.setenv("TRELLIS_REDIS_URL", "redis://:hunter2-password@127.0.0.1:6379/9")
    monkeypatch.setenv("TRELLIS_DATABASE_URL", "postgresql://trellis:pg-pass-42@db:5432/trellis")
    settings = load_settings(DEFAULT_CONFIG_DIR, gateway={"data_dir": str(tmp_path)})
    rows = {r.key: r for r in config_rows(settings, DEFAULT_CONFIG_DIR)}
    assert rows["gateway.max_body_bytes"].source == "environment"
    assert rows["gateway.max_body_bytes"].value == "2097152"
    assert rows["gateway.redis_url"].source == "environment"
    assert rows["gateway.database_url"].source == "environment"
    assert rows["gateway.data_dir"].source == "code"
    assert rows["gateway.log_level"].source == "file"
    assert rows["backends.billing.breaker.failure_threshold"].source == "default"
    assert rows["oauth.access_token_lifetime_s"].value.isdigit()  # a number, not a secret
    shown = "\n".join(f"{r.key}={r.value}" for r in rows.values())
    for secret in (
        "erp-key-from-env-0123456789",
        "hunter2-password",
        "pg-pass-42",
        "$argon2",
        "crm-sandbox",
    ):
        assert secret not in shown
    assert rows["backends.erp.auth.key"].value == "[REDACTED]"
    assert rows["backends.crm.auth.client_secret"].value == "[REDACTED]"
    assert rows["gateway.redis_url"].value.startswith("redis://[REDACTED]@127.0.0.1")
    assert rows["gateway.database_url"].value == "postgresql://[REDACTED]@db:5432/trellis"
    assert rows["clients.ops-admin.secret_hash"].value == "[REDACTED]"
