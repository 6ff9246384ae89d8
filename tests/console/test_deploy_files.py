"""deploy/: the Grafana dashboard and the Prometheus alert rules only use series the gateway
really exposes (checked against a live /metrics), and promtool accepts the rules when it is
installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.docs.live import GatewayThread

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "trellis.json"
METRIC = re.compile(r"\btrellis_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def exposed(console_gateway: GatewayThread, api_token: str) -> set[str]:
    """Every series name in a live /metrics after traffic of each kind."""
    bearer = {"Authorization": f"Bearer {api_token}"}
    requests.get(
        f"{console_gateway.url}/system/v1/inventory/stock/SKU-0001", headers=bearer, timeout=30
    )
    r = requests.get(console_gateway.url + "/metrics", headers=bearer, timeout=30)
    assert r.status_code == 200, r.text
    names = set()
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
            if kind == "histogram":
                names.update(name + s for s in ("_bucket", "_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_alert_rules_are_complete_and_use_exposed_series(exposed: set[str]) -> None:
    found = rules()
    names = {r["alert"] for r in found}
    for needed in (
        "TrellisBackendDown",
        "TrellisBreakerOpen",
        "TrellisDeadLettersGrowing",
        "TrellisErrorBudgetFastBurn",
    ):
        assert needed in names
    for rule in found:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        used = set(METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= exposed, (rule["alert"], used - exposed)


def test_dashboard_covers_every_area_with_exposed_series(exposed: set[str]) -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"]
    rows = {p["title"] for p in doc["panels"] if p["type"] == "row"}
    assert rows == {"Requests", "Backends", "Breakers", "Rate limits", "Events and DLQ"}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    exprs = dashboard_exprs()
    assert len(exprs) >= 12
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert used <= exposed, used - exposed
    # every gateway series is on the dashboard
    assert {n for n in exposed if n.endswith("_total")} - used == set()


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
