"""OPC UA deadbands and refused credentials, against the real asyncua server (subprocess) and a real Mosquitto.

asyncua 2.1's server filters absolute deadbands itself but only logs "DeadbandType Percent is not implemented"
for a percent one and reports every change (asyncua/server/monitored_item_service.py). So what the connector
sends is checked on the server side (`Test.MonitoredFilters`, the filters the server holds), and percent
filtering end to end runs against the test server's `--percent-deadband spec` mode, which adds OPC UA Part 8
6.2 to that server (tests/opcua_test_server.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from _edge_support import AliasBook, Observer, wait_until
from _opcua_support import OpcUaTestServer
from connectors.base import ConnectorContext, ConnectorType
from connectors.opcua.config import OpcUaSettings
from connectors.opcua.connector import OpcUaConnector
from hub.errors import AuthenticationFailed
from hub.broker import LocalMosquitto
from hub.connector_runner import ConnectorRunner
from hub.mqtt import BrokerUrl
from hub.sparkplug.topic import MessageType

EDGE = "oatbar-plc"
USER, PASSWORD, PASSWORD_ENV = "plantbus", "s3cret-oats", "H7_TEST_OPCUA_PASSWORD"
LEVEL, PRESSURE, COUNT = "ns=2;s=Tank.Level", "ns=2;s=Tank.Pressure", "ns=2;s=Filler.Count"


def settings(url: str, group: str, tags: list[dict], **overrides: Any) -> OpcUaSettings:
    raw: dict[str, Any] = {
        "type": "opcua", "group_id": group, "edge_node_id": EDGE, "endpoint": url,
        "publishing_interval_ms": 50, "watchdog_interval_s": 0.3, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
        "devices": [{"device_id": "tank", "sampling_interval_ms": 20, "tags": tags}],
        **overrides,
    }  # fmt: skip
    return OpcUaSettings.model_validate(raw)


class Running:
    """A connector run in a task for the length of a test."""

    def __init__(self, s: OpcUaSettings, broker: LocalMosquitto, state_dir: Path) -> None:
        ctx = ConnectorContext(BrokerUrl.parse(broker.url), None, state_dir)
        self.connector = OpcUaConnector("oatbar", s, ctx, edge_options={"backoff_min_s": 0.1, "backoff_max_s": 0.5})
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OpcUaConnector:
        self.task = asyncio.get_running_loop().create_task(self.connector.run())
        return self.connector

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def started(*extra: str) -> Iterator[OpcUaTestServer]:
    server = OpcUaTestServer(extra=list(extra))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plain_server() -> Iterator[OpcUaTestServer]:
    """asyncua's server as it is (percent deadbands accepted but not applied)."""
    yield from started()


@pytest.fixture
def spec_server() -> Iterator[OpcUaTestServer]:
    """The test server with Part 8 percent deadbands."""
    yield from started("--percent-deadband", "spec")


@pytest.fixture
def no_percent_server() -> Iterator[OpcUaTestServer]:
    """A server that refuses every percent deadband (Bad_MonitoredItemFilterUnsupported)."""
    yield from started("--percent-deadband", "unsupported")


@pytest.fixture
def login_server() -> Iterator[OpcUaTestServer]:
    """A server that takes only USER/PASSWORD: no anonymous sessions."""
    yield from started("--user", f"{USER}:{PASSWORD}")


class Plc:
    """A second OPC UA client standing for the PLC program: writes the tank's values, reads the test nodes."""

    def __init__(self, url: str, *, user: str | None = None, password: str | None = None) -> None:
        self.client = Client(url, timeout=4)
        if user is not None:
            self.client.set_user(user)
            self.client.set_password(password or "")

    async def __aenter__(self) -> Plc:
        await self.client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def write(self, node_id: str, value: float) -> None:
        await self.client.get_node(node_id).write_value(ua.Variant(value, ua.VariantType.Double))

    async def filters(self) -> dict[str, dict[str, Any]]:
        """node id -> the data-change filter the server holds for its monitored item (refreshed every tick)."""
        raw = await self.client.get_node("ns=2;s=Test.MonitoredFilters").read_value()
        return {item["node"]: item for item in json.loads(raw)}

    async def login_attempts(self) -> int:
        return int(await self.client.get_node("ns=2;s=Test.LoginAttempts").read_value())


def reported(obs: Observer, book: AliasBook, name: str) -> list[Any]:
    """Every value of one metric, DBIRTH first, as a plain Sparkplug subscriber saw them."""
    values = []
    for m in obs.messages:
        if m.topic.device_id != "tank" or m.type not in (MessageType.DBIRTH, MessageType.DDATA):
            continue
        if m.type is MessageType.DBIRTH:
            book.learn(m)
        got = book.values(m)
        if name in got:
            values.append(got[name])
    return values


async def steps(
    plc: Plc, obs: Observer, book: AliasBook, name: str, node: str, writes: list[float], last: float
) -> list[Any]:
    """Write each value in turn (the server samples on every write), then wait for `last` to arrive."""
    for value in writes:
        await plc.write(node, value)
        await asyncio.sleep(0.15)  # past a publishing interval, so a reported change would be in its own DDATA
    await wait_until(lambda: last in reported(obs, book, name), 10, f"{name} = {last}")
    return reported(obs, book, name)


# ---------------------------------------------------------------------------------------------------- deadbands


async def test_deadbands_reach_the_server_as_percent_and_absolute_datachange_filters(
    broker, group_id, tmp_path, plain_server
):
    tags = [
        {"name": "level", "node_id": LEVEL, "deadband": {"type": "percent", "value": 5}},
        {"name": "pressure", "node_id": PRESSURE, "deadband": {"type": "absolute", "value": 0.25}},
        {"name": "count", "node_id": COUNT},
    ]
    s = settings(plain_server.url, group_id, tags)
    async with Running(s, broker, tmp_path) as conn, Plc(plain_server.url) as plc:
        await wait_until(lambda: conn.connected.is_set(), 15, "a session")
        held: dict[str, dict[str, Any]] = {}
        for _ in range(50):  # the server refreshes Test.MonitoredFilters every tick (0.1 s)
            held = await plc.filters()
            if {LEVEL, PRESSURE, COUNT} <= held.keys():
                break
            await asyncio.sleep(0.1)
    assert held[LEVEL]["deadband_type"] == int(ua.DeadbandType.Percent) == 2
    assert held[LEVEL]["deadband_value"] == 5.0
    assert held[LEVEL]["trigger"] == int(ua.DataChangeTrigger.StatusValue)
    assert held[PRESSURE]["deadband_type"] == int(ua.DeadbandType.Absolute)
    assert held[PRESSURE]["deadband_value"] == 0.25
    assert held[COUNT]["deadband_type"] is None  # no filter at all
    assert conn.diagnostics()["deadband_fallbacks"] == {}


async def test_percent_deadband_reports_only_changes_beyond_its_share_of_the_eurange(
    broker, group_id, tmp_path, spec_server
):
    # EURange 0..200 and 5 %: a change must exceed 10.0 to be reported (an absolute 5 would let +7 through).
    tags = [{"name": "level", "node_id": LEVEL, "deadband": {"type": "percent", "value": 5}}]
    s = settings(spec_server.url, group_id, tags)
    async with Observer(broker) as obs, Running(s, broker, tmp_path) as conn, Plc(spec_server.url) as plc:
        await obs.wait_type(MessageType.DBIRTH, timeout=15, device="tank")
        book = AliasBook()
        values = await steps(plc, obs, book, "level", LEVEL, [57.0, 70.0, 72.5, 40.0], last=40.0)
    assert values == [50.0, 70.0, 40.0]  # 57 (+7) and 72.5 (+2.5) stayed within 5 % of 0..200
    assert conn.diagnostics()["deadband_fallbacks"] == {}


async def test_absolute_deadband_reports_only_changes_beyond_it(broker, group_id, tmp_path, plain_server):
    tags = [{"name": "pressure", "node_id": PRESSURE, "deadband": {"type": "absolute", "value": 0.5}}]
    s = settings(plain_server.url, group_id, tags)
    async with Observer(broker) as obs, Running(s, broker, tmp_path), Plc(plain_server.url) as plc:
        await obs.wait_type(MessageType.DBIRTH, timeout=15, device="tank")
        book = AliasBook()
        values = await steps(plc, obs, book, "pressure", PRESSURE, [2.3, 3.0, 3.2, 1.0], last=1.0)
    assert values == [2.0, 3.0, 1.0]  # 2.3 and 3.2 moved less than 0.5


async def test_percent_deadband_on_a_node_without_eurange_falls_back_to_every_change_and_says_why(
    broker, group_id, tmp_path, plain_server, caplog
):
    caplog.set_level(logging.WARNING, logger="connectors.opcua.connector")
    tags = [{"name": "pressure", "node_id": PRESSURE, "deadband": {"type": "percent", "value": 5}}]
    s = settings(plain_server.url, group_id, tags)
    async with Observer(broker) as obs, Running(s, broker, tmp_path) as conn, Plc(plain_server.url) as plc:
        await obs.wait_type(MessageType.DBIRTH, timeout=15, device="tank")
        book = AliasBook()
        values = await steps(plc, obs, book, "pressure", PRESSURE, [2.01, 2.02], last=2.02)
        held = (await plc.filters())[PRESSURE]
    assert values == [2.0, 2.01, 2.02]  # every change, none lost
    assert held["deadband_type"] is None  # no percent filter a server could not honour
    note = conn.diagnostics()["deadband_fallbacks"]["tank/pressure"]
    assert "percent deadband 5 not applied: the node has no EURange property" in note
    warnings = [r.getMessage() for r in caplog.records if "EURange" in r.getMessage()]
    assert len(warnings) == 1 and "absolute deadband" in warnings[0] and PRESSURE in warnings[0]


async def test_server_that_refuses_percent_deadbands_keeps_the_tag_flowing_without_one(
    broker, group_id, tmp_path, no_percent_server, caplog
):
    caplog.set_level(logging.WARNING, logger="connectors.opcua.connector")
    tags = [
        {"name": "level", "node_id": LEVEL, "deadband": {"type": "percent", "value": 5}},
        {"name": "count", "node_id": COUNT},
    ]
    s = settings(no_percent_server.url, group_id, tags)
    async with Observer(broker) as obs, Running(s, broker, tmp_path) as conn, Plc(no_percent_server.url) as plc:
        birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="tank")
        book = AliasBook()
        values = await steps(plc, obs, book, "level", LEVEL, [50.5], last=50.5)
    assert values == [50.0, 50.5]
    assert all(
        m.properties is None or "Quality" not in m.properties or m.properties["Quality"].value == 192
        for m in birth.payload.metrics
    )
    diag = conn.diagnostics()
    assert "the server refused it (BadMonitoredItemFilterUnsupported)" in diag["deadband_fallbacks"]["tank/level"]
    assert diag["bad_tags"] == {}
    assert len([r for r in caplog.records if "BadMonitoredItemFilterUnsupported" in r.getMessage()]) == 1


# ---------------------------------------------------------------------------------------------------- credentials


class _Types:
    """The registry the hub hands the runner, holding only the opcua type."""

    def __init__(self) -> None:
        from connectors.opcua.plugin import _create

        self._types = {"opcua": ConnectorType(settings=OpcUaSettings, create=_create)}

    def get(self, name: str) -> ConnectorType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return list(self._types)


async def test_wrong_password_is_authentication_failed_in_the_hub_status_and_not_retried_in_a_tight_loop(
    broker, group_id, tmp_path, login_server, monkeypatch, caplog
):
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    section = {
        "type": "opcua", "group_id": group_id, "edge_node_id": EDGE, "endpoint": login_server.url,
        "username": USER, "password_env": PASSWORD_ENV, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
        "devices": [{"device_id": "tank", "tags": [{"name": "level", "node_id": LEVEL}]}],
    }  # fmt: skip
    context = ConnectorContext(BrokerUrl.parse(broker.url), None, tmp_path)
    runner = ConnectorRunner({"oatbar": section}, _Types(), context, backoff_min_s=1.0, backoff_max_s=60.0)
    loop = asyncio.get_running_loop()
    (task,) = runner.start(loop.create_task)
    try:
        status = runner.status["oatbar"]
        await wait_until(lambda: status.last_error is not None, 15, "the refused login")
        await asyncio.sleep(2.5)  # a reconnect loop at reconnect_min_s would try about 20 times in this while
        doc = runner.diagnostics()["oatbar"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with Plc(login_server.url, user=USER, password=PASSWORD) as plc:
        attempts = await plc.login_attempts() - 1  # less this check's own login
    assert doc["state"] == "auth_failed"
    refused = f"AuthenticationFailed: OPC UA server at {login_server.url} refused user 'plantbus'"
    assert doc["last_error"].startswith(refused)
    assert f"(BadUserAccessDenied): check the user name and the password in ${PASSWORD_ENV}" in doc["last_error"]
    assert doc["connector"]["auth_failed"] and not doc["connector"]["connected"]
    # the hub retries a refused login only at its slowest pace (backoff_max_s), not on the usual doubling
    assert attempts <= 1, attempts
    assert doc["restarts"] == 1
    assert not [r for r in caplog.records if "retrying with backoff" in r.getMessage()]  # not a "try again" failure


async def test_right_password_logs_in_and_values_flow(broker, group_id, tmp_path, login_server, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    tags = [{"name": "count", "node_id": COUNT}, {"name": "level", "node_id": LEVEL}]
    s = settings(login_server.url, group_id, tags, username=USER, password_env=PASSWORD_ENV)
    async with Observer(broker) as obs, Running(s, broker, tmp_path) as conn:
        birth = await obs.wait_type(MessageType.DBIRTH, timeout=15, device="tank")
        assert birth.metric("level").value == 50.0
        book = AliasBook()
        await wait_until(lambda: len(set(reported(obs, book, "count"))) >= 3, 10, "counts from the logged-in session")
        assert conn.diagnostics()["auth_failed"] is None and conn.diagnostics()["failing"] is None


async def test_anonymous_session_against_a_server_that_requires_a_login_is_authentication_failed(
    broker, group_id, tmp_path, login_server
):
    tags = [{"name": "count", "node_id": COUNT, "datatype": "Int32"}]
    s = settings(login_server.url, group_id, tags)
    ctx = ConnectorContext(BrokerUrl.parse(broker.url), None, tmp_path)
    conn = OpcUaConnector("oatbar", s, ctx, edge_options={"backoff_min_s": 0.1, "backoff_max_s": 0.5})
    with pytest.raises(AuthenticationFailed) as info:
        await asyncio.wait_for(conn.run(), 15)
    assert "refused an anonymous session (BadIdentityTokenRejected)" in str(info.value)
    assert "set username and password_env" in str(info.value)
    assert conn.diagnostics()["auth_failed"] == str(info.value)
    assert conn.sessions == 0
