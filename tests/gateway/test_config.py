"""Config validation: every problem reported with its file and key path, non-zero exit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR, ConfigError, load_settings


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    return target


def problems_of(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_settings(directory)
    return err.value.problems


def test_shipped_config_is_valid() -> None:
    settings = load_settings(DEFAULT_CONFIG_DIR)
    assert set(settings.backends) == {"crm", "erp", "billing", "support", "marketing", "inventory"}
    assert settings.backend_url("crm") == "http://127.0.0.1:9101"
    assert settings.backend_url("inventory") == "http://127.0.0.1:9106"
    assert settings.backends["support"].rate_limit is not None


def test_unknown_key_names_file_and_path(config_dir: Path) -> None:
    text = (config_dir / "backends.yaml").read_text()
    (config_dir / "backends.yaml").write_text(
        text.replace("  max_concurrency: 16", "  max_concurency: 16")
    )
    [problem] = problems_of(config_dir)
    assert problem.startswith("config/backends.yaml: erp.max_concurency: unknown key")


def test_wrong_type_names_file_and_path(config_dir: Path) -> None:
    text = (config_dir / "gateway.yaml").read_text()
    (config_dir / "gateway.yaml").write_text(text.replace("port: 8000", "port: eighty"))
    [problem] = problems_of(config_dir)
    assert problem.startswith("config/gateway.yaml: port:")
    assert "integer" in problem


def test_every_problem_is_reported_at_once(config_dir: Path) -> None:
    text = (config_dir / "backends.yaml").read_text()
    text = text.replace(
        "max_attempts: 3, base_delay_s: 0.1", "max_attempts: many, base_delay_s: 0.1"
    )
    text = text.replace("  max_concurrency: 32", "  max_concurrency: -1")
    (config_dir / "backends.yaml").write_text(text)
    problems = problems_of(config_dir)
    assert any("erp.retry.max_attempts" in p for p in problems)
    assert any("crm.max_concurrency" in p for p in problems)


def test_missing_secret_is_reported(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRELLIS_TEST_UNSET_SECRET", raising=False)
    text = (config_dir / "backends.yaml").read_text()
    text = text.replace("${TRELLIS_ERP_API_KEY:-erp-sandbox-key}", "${TRELLIS_TEST_UNSET_SECRET}")
    (config_dir / "backends.yaml").write_text(text)
    [problem] = problems_of(config_dir)
    assert problem == (
        "config/backends.yaml: erp.auth.key: missing secret: "
        "environment variable TRELLIS_TEST_UNSET_SECRET is not set"
    )


def test_secret_from_environment(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_ERP_API_KEY", "from-env")
    settings = load_settings(config_dir)
    assert settings.backends["erp"].auth.key.get_secret_value() == "from-env"  # type: ignore[union-attr]
    assert "from-env" not in repr(settings)  # secrets never show in reprs or logs


def test_environment_overrides_any_key(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_GATEWAY__PORT", "8123")
    monkeypatch.setenv("TRELLIS_REDIS_URL", "redis://127.0.0.1:6379/3")
    settings = load_settings(config_dir)
    assert settings.gateway.port == 8123
    assert settings.gateway.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.shared_stores


def test_unknown_backend_and_missing_backend(config_dir: Path) -> None:
    text = (config_dir / "backends.yaml").read_text().replace("\ninventory:", "\nwarehouse:")
    (config_dir / "backends.yaml").write_text(text)
    [problem] = problems_of(config_dir)
    assert "unknown backend(s) ['warehouse']" in problem
    assert "['inventory'] are not configured" in problem


def test_unknown_scope_reference(config_dir: Path) -> None:
    text = (config_dir / "clients.yaml").read_text()
    (config_dir / "clients.yaml").write_text(text.replace("experience:web", "experience:wbe", 1))
    [problem] = problems_of(config_dir)
    assert "clients.web-app.scopes: unknown scope 'experience:wbe'" in problem


def test_invalid_yaml_has_line(config_dir: Path) -> None:
    (config_dir / "gateway.yaml").write_text("host: [unclosed\nport: 1\n")
    [problem] = problems_of(config_dir)
    assert problem.startswith("config/gateway.yaml: not valid YAML (line")


def test_unknown_file_and_missing_backends_file(config_dir: Path) -> None:
    (config_dir / "routes.yaml").write_text("a: 1\n")
    (config_dir / "backends.yaml").unlink()
    problems = problems_of(config_dir)
    assert any(p.startswith("config/routes.yaml: unknown config file") for p in problems)
    assert any(p.startswith("config/backends.yaml: missing") for p in problems)


def test_backend_needs_url_unless_sandbox(config_dir: Path) -> None:
    text = (
        (config_dir / "backends.yaml")
        .read_text()
        .replace("erp:\n  sandbox: true", "erp:\n  sandbox: false")
    )
    (config_dir / "backends.yaml").write_text(text)
    [problem] = problems_of(config_dir)
    assert problem.startswith("config/backends.yaml: erp:")
    assert "base_url is required" in problem


@pytest.mark.slow  # `trellis check-config` subprocesses
def test_check_config_command(config_dir: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout
    (config_dir / "gateway.yaml").write_text("port: -1\nbogus: true\n")
    bad = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--config", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "config/gateway.yaml: port:" in bad.stderr
    assert "config/gateway.yaml: bogus: unknown key" in bad.stderr
