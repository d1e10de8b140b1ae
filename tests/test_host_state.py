"""Primary host: the STATE birth/death certificates, their Will, re-assertion, legacy STATE, and losing the broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from hub.mqtt import BrokerUrl
from hub.samples import Quality
from hub.sparkplug.payload import DataType, Metric, now_ms
from hub.sparkplug.topic import legacy_state_topic
from sparkplug_fakes import FakeEdge, Recorder, Watcher, make_host, running, wait_until

STATE = "spBv1.0/STATE/testhost"
REPO = Path(__file__).resolve().parents[1]

# A hub that the test can kill with SIGKILL: no DISCONNECT, no goodbye, only the broker's Will.
HOST_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from hub.config import HostConfig, UnsConfig
    from hub.mqtt import BrokerUrl
    from hub.sparkplug.host import PrimaryHost
    from hub.uns_paths import UnsMapper

    async def main():
        config = HostConfig(host_id="testhost", accept_legacy_state=sys.argv[2] == "legacy")
        host = PrimaryHost(config, BrokerUrl.parse(sys.argv[1]), mapper=UnsMapper(UnsConfig()))
        await host.run()

    asyncio.run(main())
    """
)


async def kill_after_online(broker, watcher: Watcher, legacy: bool) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOST_PROCESS, broker.url, "legacy" if legacy else "plain", cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        birth = await watcher.wait_for(STATE, lambda m: m.json()["online"] is True, timeout=15)
        if legacy:
            await watcher.wait_for(legacy_state_topic("testhost"), lambda m: m.payload == b"ONLINE")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    return birth.json()


@pytest.mark.spec(
    "tck-id-host-topic-phid-death-required",
    "tck-id-host-topic-phid-death-qos",
    "tck-id-host-topic-phid-death-retain",
    "tck-id-host-topic-phid-death-topic",
    "tck-id-host-topic-phid-death-payload",
    "tck-id-host-topic-phid-death-payload-timestamp-connect",
    "tck-id-host-topic-phid-birth-payload-timestamp",
    "tck-id-message-flow-phid-sparkplug-state-publish-payload-timestamp",
    "tck-id-operational-behavior-host-application-connect-will",
    "tck-id-operational-behavior-host-application-connect-will-topic",
    "tck-id-operational-behavior-host-application-connect-will-payload",
    "tck-id-operational-behavior-host-application-connect-will-qos",
    "tck-id-operational-behavior-host-application-connect-will-retained",
    "tck-id-payloads-state-will-message",
    "tck-id-payloads-state-will-message-qos",
    "tck-id-payloads-state-will-message-retain",
    "tck-id-payloads-state-will-message-payload",
    "tck-id-payloads-state-birth-payload",
    "tck-id-components-ph-state",
)
async def test_will_is_delivered_on_abrupt_disconnect_with_the_birth_timestamp(broker):
    url = BrokerUrl.parse(broker.url)
    live = await Watcher(url, "live").start(STATE, legacy_state_topic("testhost"))
    before = now_ms()
    birth = await kill_after_online(broker, live, legacy=True)
    assert set(birth) == {"online", "timestamp"} and before <= birth["timestamp"] <= now_ms()
    will = await live.wait_for(STATE, lambda m: m.json()["online"] is False, timeout=10)
    assert will.json() == {"online": False, "timestamp": birth["timestamp"]}
    await live.wait_for(legacy_state_topic("testhost"), lambda m: m.payload == b"OFFLINE", timeout=10)
    # a late subscriber sees the Will as the retained STATE, at QoS 1
    late = await Watcher(url, "late").start(STATE, legacy_state_topic("testhost"))
    retained = await late.wait_for(STATE)
    assert retained.retain and retained.qos == 1
    assert retained.json() == {"online": False, "timestamp": birth["timestamp"]}
    legacy = await late.wait_for(legacy_state_topic("testhost"))
    assert legacy.retain and legacy.qos == 1 and legacy.payload == b"OFFLINE"
    await live.stop()
    await late.stop()


@pytest.mark.spec(
    "tck-id-host-topic-phid-birth-message",
    "tck-id-host-topic-phid-birth-qos",
    "tck-id-host-topic-phid-birth-retain",
    "tck-id-host-topic-phid-birth-topic",
    "tck-id-host-topic-phid-birth-required",
    "tck-id-host-topic-phid-birth-payload",
    "tck-id-message-flow-phid-sparkplug-state-publish",
    "tck-id-message-flow-phid-sparkplug-state-publish-payload",
    "tck-id-operational-behavior-host-application-connect-birth",
    "tck-id-operational-behavior-host-application-connect-birth-topic",
    "tck-id-operational-behavior-host-application-connect-birth-payload",
    "tck-id-operational-behavior-host-application-connect-birth-qos",
    "tck-id-operational-behavior-host-application-connect-birth-retained",
    "tck-id-payloads-state-birth",
    "tck-id-payloads-state-subscribe",
    "tck-id-intro-sparkplug-host-state",
    "tck-id-conformance-primary-host",
    "tck-id-operational-behavior-host-application-termination",
    "tck-id-operational-behavior-host-application-death-topic",
    "tck-id-operational-behavior-host-application-death-payload",
    "tck-id-operational-behavior-host-application-death-qos",
    "tck-id-operational-behavior-host-application-death-retained",
    "tck-id-operational-behavior-host-application-disconnect-intentional",
    "tck-id-host-topic-phid-death-payload-timestamp-disconnect-clean",
)
async def test_state_birth_is_retained_qos1_and_graceful_stop_publishes_death_first(broker, group_id):
    url = BrokerUrl.parse(broker.url)
    host = make_host(broker.url)
    rec = Recorder(host)
    edge = FakeEdge(url, group_id, "n1")
    watcher = await Watcher(url, "w").start(STATE)
    async with running(host):
        await host.wait_online()
        late = await Watcher(url, "late").start(STATE)
        birth = await late.wait_for(STATE)
        assert birth.retain and birth.qos == 1
        assert birth.json() == {"online": True, "timestamp": host.state_timestamp}
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Double, 1.0, alias=1)])
        await rec.wait_value(f"uns/{group_id}/n1/A", 1.0)
    # run() was cancelled: the host said goodbye with a death certificate, then disconnected
    death = await watcher.wait_for(STATE, lambda m: m.json()["online"] is False)
    assert death.json()["timestamp"] >= host.state_timestamp
    assert set(death.json()) == {"online", "timestamp"}
    assert rec.latest(f"uns/{group_id}/n1/A").quality is Quality.STALE
    after = await Watcher(url, "after").start(STATE)
    retained = await after.wait_for(STATE)
    assert retained.retain and retained.qos == 1 and retained.json()["online"] is False
    for w in (watcher, late, after):
        await w.stop()
    await edge.close()


@pytest.mark.spec(
    "tck-id-message-flow-hid-sparkplug-state-message-delivered",
    "tck-id-components-ph-state",
)
async def test_host_reasserts_online_when_its_own_offline_state_is_delivered(broker):
    url = BrokerUrl.parse(broker.url)
    host = make_host(broker.url)
    async with running(host):
        await host.wait_online()
        intruder = FakeEdge(url, "x", "intruder")
        await intruder.connect()
        stale_death = json.dumps({"online": False, "timestamp": host.state_timestamp - 10_000}).encode()
        watcher = await Watcher(url, "w").start(STATE)
        await watcher.wait_for(STATE, lambda m: m.json()["online"] is True)
        await intruder.raw(STATE, stale_death, qos=1, retain=True)
        await wait_until(lambda: host.stats.state_reasserts >= 1, what="the host to re-assert")
        last = await wait_until(lambda: watcher.on(STATE)[-1].json()["online"] and watcher.on(STATE)[-1],
                                what="STATE online again")
        assert last.json() == {"online": True, "timestamp": host.state_timestamp}
        fresh = await Watcher(url, "fresh").start(STATE)
        assert (await fresh.wait_for(STATE)).json()["online"] is True
        await intruder.close()
        await watcher.stop()
        await fresh.stop()


async def test_legacy_state_is_online_while_the_host_runs_and_offline_after_stop(broker):
    url = BrokerUrl.parse(broker.url)
    legacy = legacy_state_topic("testhost")
    watcher = await Watcher(url, "w").start(legacy)
    host = make_host(broker.url, accept_legacy_state=True)
    async with running(host):
        await watcher.wait_for(legacy, lambda m: m.payload == b"ONLINE")
    await watcher.wait_for(legacy, lambda m: m.payload == b"OFFLINE")
    late = await Watcher(url, "late").start(legacy)
    retained = await late.wait_for(legacy)
    assert retained.retain and retained.payload == b"OFFLINE"
    await watcher.stop()
    await late.stop()


@pytest.mark.spec(
    "tck-id-message-flow-phid-sparkplug-subscription",
    "tck-id-host-topic-phid-birth-sub-required",
    "tck-id-operational-behavior-primary-application-state-with-multiple-servers-state",
)
async def test_broker_restart_marks_everything_stale_then_good_after_the_edges_rebirth(broker, group_id):
    url = BrokerUrl.parse(broker.url)
    host = make_host(broker.url)
    rec = Recorder(host)
    edge = FakeEdge(url, group_id, "n1", bd_seq=0, auto_rebirth=True)
    path = f"uns/{group_id}/n1/d1/T"
    async with running(host):
        await host.wait_online()
        first_ts = host.state_timestamp
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Double, 1.0, alias=1)])
        await edge.dbirth("d1", [Metric("T", DataType.Double, 4.0, alias=2)])
        await rec.wait_value(path, 4.0)

        await asyncio.to_thread(broker.restart)
        stale = await rec.wait_quality(path, Quality.STALE)
        assert stale.value == 4.0
        assert rec.latest(f"uns/{group_id}/n1/A").quality is Quality.STALE
        await wait_until(lambda: host.online, timeout=10, what="the host to reconnect")
        assert host.state_timestamp > first_ts
        # persistence is off: the broker forgot the retained STATE; the host published it again
        watcher = await Watcher(url, "w").start(STATE)
        assert (await watcher.wait_for(STATE)).json() == {"online": True, "timestamp": host.state_timestamp}
        # The edge node reconnects (new bdSeq) and births again, as Sparkplug edges do.
        await edge.reconnect()
        await edge.birth()
        await rec.wait_value(path, 4.0)
        await edge.ddata("d1", [Metric(None, DataType.Double, 5.0, alias=2)])
        await rec.wait_value(path, 5.0)
        assert host.diagnostics()["connection_losses"] == 1
        await watcher.stop()
        await edge.close()


async def test_host_only_connection_loss_goes_stale_and_resyncs_silent_nodes_with_a_rebirth(broker, group_id):
    url = BrokerUrl.parse(broker.url)
    host = make_host(broker.url, resync_grace_ms=200)
    rec = Recorder(host)
    edge = FakeEdge(url, group_id, "quiet", auto_rebirth=True)
    path = f"uns/{group_id}/quiet/A"
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Double, 1.0, alias=1)])
        await rec.wait_value(path, 1.0)
        # Cut the host's TCP connection under it (a network failure): no DISCONNECT is sent.
        host._client._client.socket().shutdown(socket.SHUT_RDWR)
        await rec.wait_quality(path, Quality.STALE)
        # The edge stayed connected and publishes nothing (report by exception): the host asks it to rebirth.
        await wait_until(edge.rebirth_requests, timeout=10, what="a resync rebirth request")
        await rec.wait_value(path, 1.0)
        assert host.diagnostics()["rebirth_reasons"]["resync_after_reconnect"] == 1
        await edge.close()


async def test_a_new_host_instance_reasserts_state_and_rebuilds_state_through_rebirths(broker, group_id):
    url = BrokerUrl.parse(broker.url)
    edge = FakeEdge(url, group_id, "n1", auto_rebirth=True)
    path = f"uns/{group_id}/n1/d1/T"
    first = make_host(broker.url)
    async with running(first):
        await first.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("A", DataType.Double, 1.0, alias=1)])
        await edge.dbirth("d1", [Metric("T", DataType.Double, 4.0, alias=2)])
        await wait_until(lambda: first.node_online(group_id, "n1", "d1"), what="the device to be online")
    # The first host stopped (STATE offline retained). A new instance starts with no knowledge.
    second = make_host(broker.url)
    rec = Recorder(second)
    watcher = await Watcher(url, "w").start(STATE)
    async with running(second):
        await second.wait_online()
        await watcher.wait_for(STATE, lambda m: m.json() == {"online": True, "timestamp": second.state_timestamp})
        assert second.state_timestamp > first.state_timestamp
        # The edge keeps publishing DATA; the new host has no birth for it and asks for one.
        await edge.ddata("d1", [Metric(None, DataType.Double, 6.0, alias=2)])
        await wait_until(edge.rebirth_requests, what="a rebirth request from the new host")
        await rec.wait_value(path, 4.0)  # from the DBIRTH of the rebirth
        await edge.ddata("d1", [Metric(None, DataType.Double, 7.0, alias=2)])
        await rec.wait_value(path, 7.0)
        retained = await Watcher(url, "late").start(STATE)
        assert (await retained.wait_for(STATE)).json()["online"] is True
        await retained.stop()
    await watcher.stop()
    await edge.close()


@pytest.mark.spec(
    "tck-id-host-topic-phid-birth-message",
    "tck-id-principles-birth-certificates-order",
    "tck-id-message-flow-phid-sparkplug-subscription",
    "tck-id-host-topic-phid-birth-sub-required",
    "tck-id-payloads-state-subscribe",
    "tck-id-operational-behavior-primary-application-state-with-multiple-servers-state",
)
async def test_state_birth_comes_first_and_an_edge_that_births_on_seeing_it_is_hosted(broker, group_id, tmp_path):
    from hub.app import Hub
    from hub.config import parse_config

    url = BrokerUrl.parse(broker.url)
    everything = await Watcher(url, "all").start("#")
    busy = FakeEdge(url, group_id, "busy", auto_rebirth=True)  # was publishing before the hub existed
    await busy.connect()
    await busy.nbirth([Metric("A", DataType.Int32, 0, alias=1)])
    waiting = FakeEdge(url, group_id, "waiting")  # births only once this primary host is online
    await waiting.connect()
    state = await Watcher(url, "state").start(STATE)

    async def publish_data() -> None:
        n = 0
        while True:
            n += 1
            await busy.ndata([Metric(None, DataType.Int32, n, alias=1)])
            await asyncio.sleep(0.01)

    async def birth_on_online() -> None:
        await state.wait_for(STATE, lambda m: m.json()["online"] is True, timeout=20)
        await waiting.nbirth([Metric("B", DataType.Int32, 7, alias=1)])

    hub = Hub(parse_config({"broker": {"url": broker.url}, "host": {"host_id": "testhost"},
                            "state_dir": str(tmp_path)}))
    rec = Recorder(hub.host)
    tasks = [asyncio.create_task(publish_data()), asyncio.create_task(birth_on_online())]
    try:
        async with running(hub):
            await rec.wait_value(f"uns/{group_id}/waiting/B", 7)
            await wait_until(busy.rebirth_requests, what="a rebirth request for the busy node")
            await rec.wait_quality(f"uns/{group_id}/busy/A", Quality.GOOD)
            await wait_until(lambda: any(m.topic.startswith("uns/") for m in everything.messages), what="the mirror")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    from_host = [m for m in everything.messages
                 if m.topic == STATE or m.topic.startswith("uns/") or "/NCMD/" in m.topic or m.topic.startswith("plantbus/")]
    assert from_host[0].topic == STATE and from_host[0].json()["online"] is True
    for client in (everything, state):
        await client.stop()
    await busy.close()
    await waiting.close()


@pytest.mark.spec("tck-id-message-flow-phid-sparkplug-clean-session-311")
async def test_host_connects_with_a_clean_session(broker):
    import paho.mqtt.client as mqtt

    host = make_host(broker.url)
    async with running(host):
        await host.wait_online()

    def session_present() -> bool:
        """Connect with the host's client id and a persistent session: was a session stored for it?"""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=host.client_id, clean_session=False)
        flags: list[bool] = []
        client.on_connect = lambda c, u, f, rc, p: flags.append(f.session_present)
        client.connect("127.0.0.1", broker.port)
        while not flags:
            client.loop(0.05)
        client.disconnect()
        return flags[0]

    assert await asyncio.to_thread(session_present) is False
    # control: the probe does see a session that was stored (its own, from the line above)
    assert await asyncio.to_thread(session_present) is True


async def test_a_second_host_claiming_the_same_host_id_is_detected(broker):
    first = make_host(broker.url, client_id="first")
    second = make_host(broker.url, client_id="second")
    async with running(first):
        await first.wait_online()
        async with running(second):
            await second.wait_online()
            await wait_until(lambda: first.stats.foreign_state >= 1, what="the first host to notice")
