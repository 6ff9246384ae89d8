"""Which CRM connector the test harness's gateways and sandbox use: ``TRELLIS_TEST_CRM``.

Unset (or ``salesforce``), the shipped configuration runs as it is. ``TRELLIS_TEST_CRM=hubspot-crm``
(``make test-hubspot-crm``) runs the same tests with the ``crm`` instance served by the
``hubspot-crm`` connector against its sandbox, and ``roles: {crm: crm}`` naming it: the process,
experience and event tests must pass unchanged on either CRM.

What a test needs to know about the CRM in use it takes from here or from the seed
(``seed.crm_ids()``), never from a literal id or path of one vendor. A test about one vendor's
contract itself takes the ``vendor_crm("salesforce")`` marker and is skipped under the other.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gateway.settings import DEFAULT_CONFIG_DIR
from system_apis.sandbox import seed

ENV = "TRELLIS_TEST_CRM"
INSTANCE = "crm"
"""The instance that plays the CRM role in the harness's configuration, whichever connector."""


@dataclass(frozen=True, slots=True)
class CrmUnderTest:
    """One CRM connector as the tests meet it: its instance's configuration and its paths."""

    connector: str
    backend_yaml: str
    """The ``crm:`` entry of backends.yaml (its body, indented two spaces)."""
    contacts_path: str
    """Where its API creates a contact (the sandbox path a fault is injected on)."""
    tasks_path: str
    """Where its API creates a task."""

    def contact_path(self, contact_id: str) -> str:
        """Where its API reads one contact."""
        return f"{self.contacts_path}/{contact_id}"


SALESFORCE = CrmUnderTest(
    "salesforce",
    "",  # the shipped entry
    "/services/data/v60.0/sobjects/Contact",
    "/services/data/v60.0/sobjects/Task",
)
HUBSPOT = CrmUnderTest(
    "hubspot-crm",
    """  sandbox: true
  connector: hubspot-crm
  critical: true
  auth:
    kind: api_key
    header: Authorization
    prefix: "Bearer "
    key: ${HUBSPOT_PRIVATE_APP_TOKEN:-pat-na1-sandbox-hubspot-crm}
  timeouts: {connect_s: 2, read_s: 5, total_s: 8}
  retry: {max_attempts: 3, base_delay_s: 0.05, max_delay_s: 1, max_retry_after_s: 10}
  breaker: {failure_threshold: 5, reset_timeout_s: 10}
  max_concurrency: 32
  rate_limit: {rate: 180, period_s: 10, burst: 10}
""",
    "/crm/v3/objects/contacts",
    "/crm/v3/objects/tasks",
)
CRMS = {c.connector: c for c in (SALESFORCE, HUBSPOT)}


def crm() -> CrmUnderTest:
    """The CRM connector the tests run on (``TRELLIS_TEST_CRM``, default Salesforce)."""
    name = os.environ.get(ENV) or SALESFORCE.connector
    try:
        return CRMS[name]
    except KeyError:
        raise LookupError(f"{ENV}={name!r}: not one of {sorted(CRMS)}") from None


def swapped() -> bool:
    """Whether the tests run on another CRM than the shipped configuration's."""
    return crm() is not SALESFORCE


def sandbox_instances(defaults: dict[str, str]) -> dict[str, str]:
    """The sandbox's instances (name -> connector) with the CRM under test."""
    return {**defaults, INSTANCE: crm().connector}


def _replace_entry(text: str, name: str, body: str) -> str:
    """backends.yaml with the top-level entry ``name`` given ``body`` (comments kept)."""
    lines = text.splitlines(keepends=True)
    start = lines.index(f"{name}:\n")
    end = start + 1
    while end < len(lines) and (lines[end].startswith(" ") or not lines[end].strip()):
        end += 1
    return "".join([*lines[: start + 1], body, *lines[end:]])


@cache
def config_dir() -> Path:
    """The configuration directory the harness loads: the shipped one, or a copy of it (made
    once per process, removed at exit) whose CRM instance runs the CRM under test."""
    if not swapped():
        return DEFAULT_CONFIG_DIR
    target = Path(tempfile.mkdtemp(prefix="trellis-crm-swap-")) / "config"
    atexit.register(shutil.rmtree, target.parent, True)
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    backends = target / "backends.yaml"
    backends.write_text(_replace_entry(backends.read_text(), INSTANCE, crm().backend_yaml))
    roles = target / "roles.yaml"
    text = roles.read_text()
    assert f"\ncrm: {INSTANCE}\n" in text, "roles.yaml must name the crm instance"
    return target


def use_seed() -> seed.CrmIds:
    """Point the seed at the CRM under test (before any sandbox is made); its seed ids."""
    return seed.use_crm(crm().connector)
