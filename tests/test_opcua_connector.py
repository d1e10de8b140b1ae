"""The OPC UA connector against a real asyncua server (subprocess) and a real Mosquitto, seen by a plain subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from connectors.base import ConnectorContext
from connectors.opcua.config import OpcUaSettings
from connectors.opcua.connector import OpcUaConnector
from hub.broker import LocalMosquitto
from hub.mqtt import BrokerUrl
from hub.sparkplug.payload import DataType, Metric
from hub.sparkplug.topic import MessageType
from _edge_support import AliasBook, Observer, send_dcmd, wait_until
from _opcua_support import OpcUaTestServer

EDGE = "oatbar-plc"
FAST_EDGE = {"backoff_min_s": 0.1, "backoff_max_s": 0.5}


@pytest.fixture
def opcua_server() -> Iterator[OpcUaTestServer]:
    server = OpcUaTestServer()
    server.start()
    yield server
    server.stop()


def settings(url: str, group: str, **overrides: Any) -> OpcUaSettings:
    tags = [
        {"name": "count", "node_id": "ns=2;s=Filler.Count"},
        {"name": "speed", "node_id": "ns=2;s=Filler.Speed", "writable": True},
        {"name": "running", "browse_path": "2:Oatbar/2:Filler/2:Running"},
        {"name": "recipe", "node_id": "ns=2;s=Filler.Recipe", "writable": True},
        {"name": "temperature", "node_id": "ns=2;s=Filler.Temperature", "writable": True},
        {"name": "rejects", "node_id": "ns=2;s=Filler.Rejects", "writable": True},
    ]
    raw: dict[str, Any] = {
        "type": "opcua", "group_id": group, "edge_node_id": EDGE, "endpoint": url,
        "publishing_interval_ms": 50, "watchdog_interval_s": 0.3, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
        "devices": [{"device_id": "filler", "sampling_interval_ms": 20, "poll_interval_ms": 100,
                     "tags": overrides.pop("tags", tags)}],
    }  # fmt: skip
    raw.update(overrides)
    return OpcUaSettings.model_validate(raw)


class Running:
    """A connector run in a task for the length of a test."""

    def __init__(self, s: OpcUaSettings, broker: LocalMosquitto, state_dir: Path) -> None:
        ctx = ConnectorContext(BrokerUrl.parse(broker.url), None, state_dir)
        self.connector = OpcUaConnector("oatbar", s, ctx, edge_options=FAST_EDGE)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OpcUaConnector:
        self.task = asyncio.get_running_loop().create_task(self.connector.run())
        return self.connector

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def quality(m: Metric) -> int:
    return m.properties["Quality"].value if m.properties and "Quality" in m.properties else 192


def data_values(obs: Observer, book: AliasBook, device: str, after: int = 0) -> list[dict[str, Any]]:
    return [book.values(m) for m in obs.of(MessageType.DDATA, device=device)[after:]]


async def test_dbirth_carries_opcua_values_with_sparkplug_types_and_subscription_delivers_changes(
    broker, group_id, tmp_path, opcua_server
):
    async with Observer(broker) as obs, Running(settings(opcua_server.url, group_id), broker, tmp_path) as conn:
        birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="filler")
        types = {m.name: m.datatype for m in birth.payload.metrics}
        assert types == {
            "count": DataType.Int32, "speed": DataType.Double, "running": DataType.Boolean,
            "recipe": DataType.String, "temperature": DataType.Float, "rejects": DataType.UInt16,
        }  # fmt: skip
        assert birth.metric("speed").value == 120.5
        assert birth.metric("recipe").value == "OB-40"
        assert birth.metric("running").value is True
        assert birth.metric("rejects").value == 3
        assert all(quality(m) == 192 for m in birth.payload.metrics)
        book = AliasBook()
        book.learn(birth)
        # Filler.Count changes every 0.1 s on the server: the subscription brings a run of rising values.
        await wait_until(lambda: len([v for v in data_values(obs, book, "filler") if "count" in v]) >= 3, 10, "counts")
        counts = [v["count"] for v in data_values(obs, book, "filler") if "count" in v]
        assert counts == sorted(counts) and len(set(counts)) == len(counts)
        assert conn.mode_in_use == "subscribe"


async def test_poll_mode_reports_changes_without_a_subscription(broker, group_id, tmp_path, opcua_server):
    s = settings(opcua_server.url, group_id, mode="poll")
    async with Observer(broker) as obs, Running(s, broker, tmp_path) as conn:
        birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="filler")
        book = AliasBook()
        book.learn(birth)
        await wait_until(lambda: len([v for v in data_values(obs, book, "filler") if "count" in v]) >= 2, 10, "polls")
        assert conn.mode_in_use == "poll"


async def test_dcmd_writes_the_node_with_its_variant_type_and_read_only_tags_are_refused(
    broker, group_id, tmp_path, opcua_server
):
    async with Observer(broker) as obs, Running(settings(opcua_server.url, group_id), broker, tmp_path) as conn:
        birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="filler")
        book = AliasBook()
        book.learn(birth)
        await send_dcmd(broker, group_id, EDGE, "filler", Metric("speed", DataType.Double, 99.5),
                        Metric("rejects", DataType.UInt16, 7), Metric("recipe", DataType.String, "GR-250"))  # fmt: skip
        # Temperature is configured writable but the server's AccessLevel is read-only: refused before any write.
        await send_dcmd(broker, group_id, EDGE, "filler", Metric("temperature", DataType.Float, 5.0))
        await wait_until(lambda: conn.edge.stats.writes_accepted >= 3 and conn.edge.stats.writes_rejected >= 1, 10)
        async with Client(opcua_server.url) as client:
            speed = await client.get_node("ns=2;s=Filler.Speed").read_data_value()
            rejects = await client.get_node("ns=2;s=Filler.Rejects").read_data_value()
            recipe = await client.get_node("ns=2;s=Filler.Recipe").read_value()
            temperature = await client.get_node("ns=2;s=Filler.Temperature").read_value()
        assert (speed.Value.Value, speed.Value.VariantType) == (99.5, ua.VariantType.Double)
        assert (rejects.Value.Value, rejects.Value.VariantType) == (7, ua.VariantType.UInt16)
        assert recipe == "GR-250"
        assert temperature == pytest.approx(21.5)
        await wait_until(lambda: any(v.get("speed") == 99.5 for v in data_values(obs, book, "filler")), 5, "speed")


async def test_unknown_node_id_is_reported_bad_while_the_other_tags_flow(broker, group_id, tmp_path, opcua_server, caplog):
    tags = [
        {"name": "count", "node_id": "ns=2;s=Filler.Count"},
        {"name": "ghost", "node_id": "ns=2;s=Filler.DoesNotExist", "datatype": "Double"},
        {"name": "lost", "browse_path": "2:Oatbar/2:Nowhere"},
    ]
    s = settings(opcua_server.url, group_id, tags=tags)
    async with Observer(broker) as obs, Running(s, broker, tmp_path):
        birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="filler")
        assert quality(birth.metric("ghost")) == 0 and birth.metric("ghost").datatype is DataType.Double
        assert quality(birth.metric("lost")) == 0
        assert quality(birth.metric("count")) == 192
    messages = [r.getMessage() for r in caplog.records if "DoesNotExist" in r.getMessage()]
    assert len(messages) == 1 and "plantbus opcua browse" in messages[0]


async def test_unreachable_server_is_logged_once_and_retried_until_it_appears(broker, group_id, tmp_path, caplog):
    server = OpcUaTestServer()
    s = settings(server.url, group_id)
    async with Observer(broker) as obs, Running(s, broker, tmp_path) as conn:
        await wait_until(lambda: conn.diagnostics()["failing"], 10, "a failed connect")
        await asyncio.sleep(1.0)  # let several retries happen; they must not log again
        await asyncio.to_thread(server.start)
        try:
            await obs.wait_type(MessageType.DBIRTH, timeout=15, device="filler")
        finally:
            server.stop()
    failures = [r for r in caplog.records if "cannot reach OPC UA server" in r.getMessage()]
    assert len(failures) == 1


async def test_server_restart_marks_tags_bad_then_resubscribes_and_values_flow_again(broker, group_id, tmp_path):
    server = OpcUaTestServer()
    await asyncio.to_thread(server.start)
    try:
        async with Observer(broker) as obs, Running(settings(server.url, group_id), broker, tmp_path) as conn:
            birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="filler")
            book = AliasBook()
            book.learn(birth)
            await wait_until(lambda: any("count" in v for v in data_values(obs, book, "filler")), 10, "first counts")
            server.stop()
            # Every tag turns BAD in one DDATA once the lost session is detected.
            await obs.wait_for(
                lambda m: m.type is MessageType.DDATA and m.payload is not None
                and len(m.payload.metrics) == 6 and all(quality(x) == 0 for x in m.payload.metrics),
                timeout=10,
            )  # fmt: skip
            await asyncio.to_thread(server.start)
            after = len(obs.of(MessageType.DDATA, device="filler"))
            # The server started from scratch: Count counts up again from 0 through a *new* subscription.
            await wait_until(
                lambda: len([v for v in data_values(obs, book, "filler", after) if "count" in v]) >= 3, 15, "counts"
            )
            latest = obs.of(MessageType.DDATA, device="filler")[-1]
            assert all(quality(m) == 192 for m in latest.payload.metrics)
            assert conn.sessions == 2
    finally:
        server.stop()


async def test_server_that_refuses_subscriptions_is_polled_instead(broker, group_id, tmp_path):
    server = OpcUaTestServer(extra=["--max-subscriptions", "0"])
    await asyncio.to_thread(server.start)
    try:
        async with Observer(broker) as obs, Running(settings(server.url, group_id), broker, tmp_path) as conn:
            birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="filler")
            book = AliasBook()
            book.learn(birth)
            await wait_until(lambda: len([v for v in data_values(obs, book, "filler") if "count" in v]) >= 2, 10)
            assert conn.mode_in_use == "poll"
    finally:
        server.stop()


async def test_basic256sha256_sign_and_encrypt_with_client_certificate_and_wrong_mode_is_refused(
    broker, group_id, tmp_path, caplog
):
    from opcua_test_server import make_certificate

    certs = tmp_path / "certs"
    certs.mkdir()
    await make_certificate(certs / "client-key.pem", certs / "client-cert.der", "urn:example.org:FreeOpcUa:opcua-asyncio")
    server = OpcUaTestServer(extra=["--secure", str(certs)])
    await asyncio.to_thread(server.start)
    security = {"policy": "Basic256Sha256", "certificate": str(certs / "client-cert.der"),
                "private_key": str(certs / "client-key.pem")}  # fmt: skip
    try:
        wrong = settings(server.url, group_id, security={**security, "mode": "Sign"}, edge_node_id="wrong")
        async with Running(wrong, broker, tmp_path / "wrong") as conn:
            failing = await wait_until(lambda: conn.diagnostics()["failing"], 15, "a refused connect")
            assert "no endpoint with security Basic256Sha256/Sign" in failing
            assert not conn.connected.is_set()
        s = settings(server.url, group_id, security={**security, "mode": "SignAndEncrypt"})
        async with Observer(broker) as obs, Running(s, broker, tmp_path) as conn:
            birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="filler")
            assert birth.metric("speed").value == 120.5
    finally:
        server.stop()
