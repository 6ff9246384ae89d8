"""The durable records on PostgreSQL (``gateway.database_url``): a whole gateway keeps its
idempotency keys, cross-references, outbox, deliveries and revocations there; several
processes migrate one database once; and an outage of the database is a 503 problem with
``Retry-After``, never a 500, from which the next request after its return recovers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import pytest

from gateway.events.component import open_store
from gateway.events.postgres_store import PostgresEventStore
from gateway.settings import load_settings
from gateway.stores.postgres import MIGRATIONS, DatabaseUnavailable, SchemaMissing, migrate
from gateway.stores.postgres_records import PostgresOperationStore, PostgresRevocationStore
from gateway.stores.revocations import open_revocation_store
from gateway.stores.saga_postgres import PostgresSagaLog
from process_apis.ports import Outcome, StoredResponse
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.eventually import eventually
from tests.process.harness import assert_problem, running_gateway
from tests.servers import free_port

pytestmark = pytest.mark.slow  # whole gateways against every sandbox backend


class Forwarder:
    """A TCP relay in front of PostgreSQL that the test can cut (every connection reset, new
    ones refused) and restore on the same port: a database outage as the gateway sees it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@contextlib.asynccontextmanager
async def forwarded(database_url: str) -> AsyncIterator[tuple[Forwarder, str]]:
    """``database_url`` through a ``Forwarder`` (the test's schema kept)."""
    parts = urlsplit(database_url)
    relay = Forwarder(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = parts.netloc.rpartition("@")[0]
    url = urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{relay.port}".lstrip("@")))
    await relay.start()
    try:
        yield relay, url
    finally:
        await relay.stop()


def order_request(index: int) -> dict[str, Any]:
    p = seed.people()[index]
    sku = next(s.sku for s in seed.skus() if s.on_hand >= 150)
    return {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}


async def test_orders_tokens_and_events_through_a_postgres_backed_gateway(
    sandbox: SandboxThread, tmp_path: Path, database_url: str, clean_sandbox: SandboxThread
) -> None:
    """The saga log, xrefs, the outbox and revocations in PostgreSQL: nothing in the data dir's
    SQLite."""
    req = order_request(401)
    hdr = {"Idempotency-Key": uuid.uuid4().hex}
    async with running_gateway(sandbox, tmp_path, gateway={"database_url": database_url}) as gw:
        assert isinstance(gw.process.store, PostgresOperationStore)
        assert isinstance(gw.process.saga_log, PostgresSagaLog)
        status, _, first = await gw.call("POST", "/process/v1/orders", json=req, headers=hdr)
        assert status == 201, first
        status, headers, again = await gw.call("POST", "/process/v1/orders", json=req, headers=hdr)
        assert status == 201 and again == first and headers["Idempotent-Replayed"] == "true"

        conn = await asyncpg.connect(database_url)
        try:
            # an order's key and answer are in the saga log, beside its steps
            op = await conn.fetchrow("SELECT id, state, status, body FROM operations")
            assert op["state"] == "done" and op["status"] == 201
            assert orjson.loads(op["body"]) == first
            steps = await conn.fetch(
                "SELECT name, state FROM operation_steps WHERE op_id = $1 ORDER BY seq", op["id"]
            )
            assert [(r["name"], r["state"]) for r in steps] == [
                ("inventory.reserve", "done"),
                ("erp.create_order", "done"),
                ("billing.create_invoice", "done"),
                ("crm.log_activity", "done"),
                ("publish", "done"),
            ]
            placed = await conn.fetch("SELECT subject FROM outbox WHERE type = 'order.placed'")
            assert [r["subject"] for r in placed] == [first["id"]]
            xref = await conn.fetchval(
                "SELECT count(*) FROM xrefs WHERE customer_id = $1", f"order:{first['id']}"
            )
            assert xref >= 1

            # the order's subscribers are delivered from the PostgreSQL event tables
            async def delivered() -> list[Any]:
                rows = await conn.fetch(
                    "SELECT d.state FROM event_deliveries d JOIN outbox o ON o.seq = d.seq"
                    " WHERE o.type = 'order.placed'"
                )
                assert rows and {r["state"] for r in rows} == {"delivered"}, rows
                return list(rows)

            await eventually(delivered, timeout=20, message="order.placed delivered")

            # a revocation is kept in PostgreSQL and refused from the next request on
            token = gw.tokens["orders-service"]
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    gw.url + "/oauth/revoke",
                    data={"token": token},
                    headers={
                        "Authorization": aiohttp.encode_basic_auth(
                            "orders-service", "orders-service-secret"
                        )
                    },
                ) as r:
                    assert r.status == 200
            assert await conn.fetchval("SELECT count(*) FROM revoked_tokens") == 1
            status, _, _ = await gw.call("GET", f"/process/v1/orders/{first['id']}")
            assert status == 401
        finally:
            await conn.close()
    data = Path(gw.settings.gateway.data_dir)
    for name in ("trellis.db", "revocations.db", "sagas.db"):
        assert not (data / name).exists(), name


async def test_database_outage_is_a_503_problem_and_the_retry_after_it_succeeds(
    sandbox: SandboxThread, tmp_path: Path, database_url: str, clean_sandbox: SandboxThread
) -> None:
    req = order_request(402)
    hdr = {"Idempotency-Key": uuid.uuid4().hex}
    async with (
        forwarded(database_url) as (relay, url),
        running_gateway(sandbox, tmp_path, gateway={"database_url": url}) as gw,
    ):
        status, _, body = await gw.call("GET", "/process/v1/customers/nope/360")
        assert status != 503, body  # served while the database is up
        await relay.stop()
        for method, path, kw in (
            ("POST", "/process/v1/orders", {"json": req, "headers": hdr}),
            ("GET", f"/process/v1/customers/{req['customer_id']}/360", {}),
        ):
            status, headers, body = await gw.call(method, path, **kw)
            assert_problem(status, headers, body, 503)
            assert headers["Retry-After"] == "1"
            assert body["type"].rsplit("/", 1)[-1] in (
                "authentication-unavailable",  # the token's revocation check comes first
                "store-unavailable",
            )
        await relay.start()  # the database is back: the first request is served
        status, _, first = await gw.call("POST", "/process/v1/orders", json=req, headers=hdr)
        assert status == 201, first
    conn = await asyncpg.connect(database_url)
    try:
        placed = await conn.fetch("SELECT subject FROM outbox WHERE type = 'order.placed'")
        assert [r["subject"] for r in placed] == [first["id"]]  # one order, announced once
    finally:
        await conn.close()


async def test_each_store_raises_database_unavailable_during_an_outage(
    database_url: str,
) -> None:
    """What the gateway's handlers turn into 503 problems: never a raw socket error."""
    async with forwarded(database_url) as (relay, url):
        ops = PostgresOperationStore(url)
        revocations = PostgresRevocationStore(url)
        events = PostgresEventStore(url)
        for store in (ops, revocations, events):
            await store.open()
        try:
            await relay.stop()
            with pytest.raises(DatabaseUnavailable):
                await ops.begin("k", "fp")
            with pytest.raises(DatabaseUnavailable):
                await ops.commit(Outcome(idempotency_key="k"))
            with pytest.raises(DatabaseUnavailable):
                await revocations.is_revoked("jti")
            with pytest.raises(DatabaseUnavailable):
                await events.relay(lambda _t: [], 10)
            await relay.start()
            assert (await ops.begin("k", "fp")).state.value == "new"
            assert await revocations.is_revoked("jti") is False
        finally:
            for store in (ops, revocations, events):
                await store.close()


async def test_an_absent_database_stops_startup_naming_it_without_credentials() -> None:
    url = f"postgresql://trellis:s3cret@127.0.0.1:{free_port()}/trellis_test"
    with pytest.raises(DatabaseUnavailable) as caught:
        await PostgresOperationStore(url).open()
    assert "127.0.0.1" in str(caught.value) and "s3cret" not in str(caught.value)


async def test_hosts_claiming_one_key_at_once_have_one_winner(database_url: str) -> None:
    """Two stores (two hosts' pools) race for the same keys: each key is claimed once, and the
    loser sees it in progress, then the winner's answer."""
    hosts = [PostgresOperationStore(database_url) for _ in range(2)]
    for host in hosts:
        await host.open()
    try:
        keys = [f"k{i}" for i in range(20)]
        results = await asyncio.gather(
            *(host.begin(key, "fp") for key in keys for host in hosts for _ in range(3))
        )
        states = [r.state.value for r in results]
        assert states.count("new") == len(keys) and states.count("in_progress") == 5 * len(keys)
        await hosts[0].commit(
            Outcome(idempotency_key="k0", response=StoredResponse(201, {"id": "1"}))
        )
        replay = await hosts[1].begin("k0", "fp")
        assert replay.state.value == "done" and replay.response == StoredResponse(201, {"id": "1"})
    finally:
        for host in hosts:
            await host.close()


async def test_a_missing_schema_stops_startup_saying_so(postgres_url: str) -> None:
    sep = "&" if "?" in postgres_url else "?"
    store = PostgresOperationStore(f"{postgres_url}{sep}search_path=no_such_schema_here")
    with pytest.raises(SchemaMissing, match="no_such_schema_here"):
        await store.open()


async def test_processes_starting_together_migrate_the_schema_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        versions = await asyncio.gather(*(migrate(c) for c in conns))
        assert versions == [MIGRATIONS[-1][0]] * 4
        applied = await conns[0].fetch("SELECT version FROM trellis_schema")
        assert [r["version"] for r in applied] == [v for v, _ in MIGRATIONS]
    finally:
        for c in conns:
            await c.close()


async def test_database_url_selects_postgres_for_every_durable_store(
    tmp_path: Path, database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRELLIS_DATABASE_URL", database_url)
    monkeypatch.setenv("TRELLIS_REDIS_URL", redis_url)
    settings = load_settings()
    assert settings.gateway.database_url == database_url
    assert isinstance(open_store(settings), PostgresEventStore)
    revocations = await open_revocation_store(
        redis_url, tmp_path, database_url=settings.gateway.database_url
    )
    try:
        assert isinstance(revocations, PostgresRevocationStore)
    finally:
        await revocations.close()
