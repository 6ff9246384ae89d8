"""A token grants a scope only while its client is still allowed it: taking a scope from a
client's configuration takes it from the client's unexpired tokens too, at the next restart
(configuration is read at start), without waiting for them to expire."""

from __future__ import annotations

from pathlib import Path

from gateway.oauth import ClientConfig
from tests.oauth.conftest import FAST_HASHER, RunFactory, secret_of


async def test_scope_removed_from_client_is_refused_on_existing_token(
    run_gateway: RunFactory, tmp_path: Path, clients: dict[str, ClientConfig]
) -> None:
    data_dir = tmp_path / "shared-data"  # the same keys and revocations across the restart
    async with run_gateway(data_dir=data_dir) as gw:
        access = await gw.token("ops-admin")
        assert (await gw.get("/admin", access)).status_code == 200
        whoami = (await gw.get("/whoami", access)).json()
        assert "admin" in whoami["scopes"]

    reduced = dict(clients)
    reduced["ops-admin"] = ClientConfig(
        secret_hash=FAST_HASHER.hash(secret_of("ops-admin")),
        scopes=["system:read"],
        tier="internal",
    )
    async with run_gateway(data_dir=data_dir, clients_override=reduced) as gw:
        assert (await gw.get("/admin", access)).status_code == 403
        whoami = (await gw.get("/whoami", access)).json()
        assert whoami["scopes"] == ["system:read"]
