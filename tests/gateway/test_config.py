"""Config validation: every problem reported with its file and key path, non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR, load_settings
from tests.config_files import problems_of


def test_shipped_config_is_valid() -> None:
    settings = load_settings(DEFAULT_CONFIG_DIR)
    assert set(settings.backends) == {
        "crm",
        "erp",
        "billing",
        "support",
        "marketing",
        "inventory",
        "shipping",
    }
    # sandbox ports follow the instance names in sorted order from base_port
    assert settings.backend_url("billing") == "http://127.0.0.1:9101"
    assert settings.backend_url("crm") == "http://127.0.0.1:9102"
    assert settings.backend_url("shipping") == "http://127.0.0.1:9106"
    assert settings.backend_url("support") == "http://127.0.0.1:9107"
    assert settings.role_instances()["crm"] == "crm"
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


def test_renamed_instance_must_be_renamed_in_roles(config_dir: Path) -> None:
    text = (config_dir / "backends.yaml").read_text().replace("\ninventory:", "\nwarehouse:")
    (config_dir / "backends.yaml").write_text(text)
    assert problems_of(config_dir) == [
        "config/roles.yaml: inventory: unknown instance 'inventory'; instances: "
        "['billing', 'crm', 'erp', 'marketing', 'shipping', 'support', 'warehouse']",
    ]
    roles = (config_dir / "roles.yaml").read_text()
    (config_dir / "roles.yaml").write_text(roles.replace("inventory: inventory", ""))
    settings = load_settings(config_dir)  # the one instance playing the role serves it
    assert settings.role_instances()["inventory"] == "warehouse"


def test_unknown_scope_reference(config_dir: Path) -> None:
    text = (config_dir / "clients.yaml").read_text()
    (config_dir / "clients.yaml").write_text(text.replace("experience:web", "experience:wbe", 1))
    [problem] = problems_of(config_dir)
    assert problem == "config/clients.yaml: web-app.scopes: unknown scope 'experience:wbe'"


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


def test_backend_needs_url_unless_sandbox(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRELLIS_ERP_API_KEY", "a-real-key")  # outside the sandbox: its own
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


def trellis(
    command: str, config_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``trellis COMMAND --config DIR`` with no TRELLIS_ variables but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("TRELLIS_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", command, "--config", str(config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def problem_lines(stderr: str) -> list[str]:
    return [line.removeprefix("  - ") for line in stderr.splitlines() if line.startswith("  - ")]


def test_unset_variable_does_not_hide_other_problems(config_dir: Path) -> None:
    text = (config_dir / "backends.yaml").read_text()
    text = text.replace("${TRELLIS_ERP_API_KEY:-erp-sandbox-key}", "${TRELLIS_TEST_UNSET_SECRET}")
    text = text.replace("  max_concurrency: 32", "  max_concurrency: -1")
    (config_dir / "backends.yaml").write_text(text)
    gateway = (config_dir / "gateway.yaml").read_text().replace("port: 8000", "port: eighty")
    (config_dir / "gateway.yaml").write_text(gateway + "bogus: true\n")
    clients = (config_dir / "clients.yaml").read_text()
    (config_dir / "clients.yaml").write_text(clients.replace("experience:web", "experience:wbe", 1))

    result = trellis("check-config", config_dir)

    assert result.returncode == 2
    problems = problem_lines(result.stderr)
    assert (
        "config/backends.yaml: erp.auth.key: missing secret: environment variable "
        "TRELLIS_TEST_UNSET_SECRET is not set"
    ) in problems
    assert any(p.startswith("config/backends.yaml: crm.max_concurrency:") for p in problems)
    assert any(p.startswith("config/gateway.yaml: port:") for p in problems)
    assert "config/gateway.yaml: bogus: unknown key" in problems
    assert any(
        p.startswith("config/clients.yaml: web-app.scopes:") and "'experience:wbe'" in p
        for p in problems
    )
    # the blanked secret raises nothing more than its own problem
    assert [p for p in problems if "erp.auth" in p] == [
        "config/backends.yaml: erp.auth.key: missing secret: environment variable "
        "TRELLIS_TEST_UNSET_SECRET is not set"
    ]
    assert f"({len(problems)} problem(s))" in result.stderr


def test_wrong_override_names_the_environment_variable(config_dir: Path) -> None:
    gateway = (config_dir / "gateway.yaml").read_text().replace("max_body_bytes: 1048576", "")
    (config_dir / "gateway.yaml").write_text(gateway + "max_body_bytes: 12\n")

    result = trellis(
        "check-config",
        config_dir,
        {
            "TRELLIS_GATEWAY__PORT": "eighty",
            "TRELLIS_BACKENDS__ERP__RETRY__MAX_ATTEMPTS": "0",
            "TRELLIS_GATEWAY__SANDBOX": "{not json",
            "TRELLIS_GATEWAY__READINESS": '{"probe_timeout_s": 1, "extra": 2}',
        },
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    problems = problem_lines(result.stderr)
    assert any(p.startswith("environment TRELLIS_GATEWAY__PORT: gateway.port:") for p in problems)
    assert any(
        p.startswith("environment TRELLIS_BACKENDS__ERP__RETRY__MAX_ATTEMPTS: ")
        and "backends.erp.retry.max_attempts" in p
        for p in problems
    )
    assert any(
        p.startswith("environment TRELLIS_GATEWAY__SANDBOX: gateway.sandbox: not valid JSON")
        for p in problems
    )
    assert (
        "environment TRELLIS_GATEWAY__READINESS: gateway.readiness.extra: unknown key" in problems
    )
    # a problem in a file is the file's, and names no variable
    [from_file] = [p for p in problems if "max_body_bytes" in p]
    assert from_file.startswith("config/gateway.yaml: max_body_bytes:")
    assert "TRELLIS_" not in from_file
    assert len(problems) == 5


def test_override_that_breaks_a_rule_is_named_beside_the_file(config_dir: Path) -> None:
    result = trellis(
        "check-config",
        config_dir,
        {"TRELLIS_BACKENDS__ERP__SANDBOX": "false", "TRELLIS_ERP_API_KEY": "a-real-key"},
    )
    assert result.returncode == 2
    [problem] = problem_lines(result.stderr)
    assert problem.startswith("config/backends.yaml: erp: base_url is required")
    assert problem.endswith("(with environment TRELLIS_BACKENDS__ERP__SANDBOX)")


def test_override_replaces_an_unset_variable(config_dir: Path) -> None:
    text = (config_dir / "backends.yaml").read_text()
    text = text.replace("${TRELLIS_ERP_API_KEY:-erp-sandbox-key}", "${TRELLIS_TEST_UNSET_SECRET}")
    (config_dir / "backends.yaml").write_text(text)
    result = trellis("check-config", config_dir, {"TRELLIS_BACKENDS__ERP__AUTH__KEY": "k"})
    assert result.returncode == 0, result.stderr


def test_unknown_trellis_variables_warn_with_a_suggestion(config_dir: Path) -> None:
    result = trellis(
        "check-config",
        config_dir,
        {
            "TRELLIS_GATWAY__PORT": "9000",
            "TRELLIS_GATEWAY__PORTT": "9000",
            "TRELLIS_BACKENDS__ERP__TIMEOTS__READ_S": "3",
            "TRELLIS_REDIS_ULR": "redis://127.0.0.1:6379/3",
            "TRELLIS_GATEWAY__PORT__HTTP": "1",
            # documented, or read by the files: no warning
            "TRELLIS_CONFIG_DIR": str(config_dir),
            "TRELLIS_ERP_API_KEY": "key-from-env",
            "TRELLIS_BILLING_WEBHOOK_SECRET": "whsec_env",
            "TRELLIS_TEST_REDIS_URL": "redis://127.0.0.1:6379/3",
            "TRELLIS_GATEWAY__SANDBOX__BASE_PORT": "31200",
        },
    )
    assert result.returncode == 0, result.stderr  # a warning, not a failure
    assert "configuration OK" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("trellis: warning:")]
    expected = {
        "TRELLIS_GATWAY__PORT": "TRELLIS_GATEWAY__PORT",
        "TRELLIS_GATEWAY__PORTT": "TRELLIS_GATEWAY__PORT",
        "TRELLIS_BACKENDS__ERP__TIMEOTS__READ_S": "TRELLIS_BACKENDS__ERP__TIMEOUTS__READ_S",
        "TRELLIS_REDIS_ULR": "TRELLIS_REDIS_URL",
    }
    for name, suggestion in expected.items():
        [line] = [w for w in warnings if f" {name} " in w]
        assert "matches no setting" in line
        assert line.endswith(f"did you mean {suggestion}?")
    assert any(" TRELLIS_GATEWAY__PORT__HTTP " in w for w in warnings)
    assert len(warnings) == 5


def test_misspelled_override_is_not_applied(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRELLIS_GATEWAY__PORTT", "not-a-port")
    settings = load_settings(config_dir)
    assert settings.gateway.port == 8000


def test_gateway_start_lists_every_problem(config_dir: Path) -> None:
    gateway = (config_dir / "gateway.yaml").read_text().replace("port: 8000", "port: eighty")
    (config_dir / "gateway.yaml").write_text(gateway)
    result = trellis("run", config_dir, {"TRELLIS_GATEWAY__WORKERS": "0"})
    assert result.returncode == 2
    problems = problem_lines(result.stderr)
    assert any(p.startswith("config/gateway.yaml: port:") for p in problems)
    assert any(p.startswith("environment TRELLIS_GATEWAY__WORKERS:") for p in problems)


def test_key_path_inside_a_tagged_union_is_the_files(config_dir: Path) -> None:
    text = (config_dir / "backends.yaml").read_text()
    key = "    key: ${TRELLIS_ERP_API_KEY:-erp-sandbox-key}\n"
    (config_dir / "backends.yaml").write_text(text.replace(key, key + "    bogus: 1\n"))
    [problem] = problems_of(config_dir)
    assert problem == "config/backends.yaml: erp.auth.bogus: unknown key"


def test_a_sandbox_credential_is_refused_outside_sandbox_mode(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend pointed at a real URL with its variable unset would otherwise call the vendor
    with a credential anyone can read in the repository."""
    for name in ("TRELLIS_BILLING_API_KEY", "TRELLIS_BILLING_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    text = (config_dir / "backends.yaml").read_text()
    (config_dir / "backends.yaml").write_text(
        text.replace(
            "billing:\n  sandbox: true",
            "billing:\n  sandbox: false\n  base_url: https://api.stripe.com",
        )
    )
    found = problems_of(config_dir)
    [key] = [p for p in found if p.startswith("config/backends.yaml: billing.auth.key:")]
    assert "TRELLIS_BILLING_API_KEY is not set" in key
    [secret] = [
        p for p in found if p.startswith("config/events.yaml: inbound_webhooks.billing.secret:")
    ]
    assert "TRELLIS_BILLING_WEBHOOK_SECRET" in secret
    assert len(found) == 2, found
    assert "sk_test_trellis_sandbox" not in "\n".join(found)  # never echo a credential

    monkeypatch.setenv("TRELLIS_BILLING_API_KEY", "sk_live_from_the_environment")
    monkeypatch.setenv("TRELLIS_BILLING_WEBHOOK_SECRET", "whsec_from_the_environment")
    settings = load_settings(config_dir)
    assert settings.backends["billing"].auth.key.get_secret_value() == (  # type: ignore[union-attr]
        "sk_live_from_the_environment"
    )


def test_sandbox_credentials_need_no_environment(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TRELLIS_BILLING_API_KEY", "TRELLIS_BILLING_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(config_dir)
    assert settings.backends["billing"].sandbox
    assert settings.events.inbound_webhooks["billing"].secret == "whsec_trellis_sandbox"


def test_an_override_of_the_credential_itself_is_accepted(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRELLIS_ERP_API_KEY", raising=False)
    settings = load_settings(
        config_dir,
        backends={
            "erp": {"sandbox": False, "base_url": "https://erp.example", "auth": {"key": "k-1"}}
        },
    )
    assert settings.backends["erp"].auth.key.get_secret_value() == "k-1"  # type: ignore[union-attr]
