"""Primary host awareness: births wait for STATE online, a valid offline STATE ends the session, stale ones do not."""

from __future__ import annotations

import asyncio
import re

import pytest
from _edge_support import AliasBook, Observer, broker_log, debug_broker, publish, send_state, wait_until

from hub.mqtt import BrokerUrl
from hub.sparkplug.edge import EdgeNode
from hub.sparkplug.payload import DataType, now_ms
from hub.sparkplug.topic import MessageType as MT
from hub.sparkplug.topic import legacy_state_topic

HOST = "scada-primary"


def make_node(broker, group_id, tmp_path, **kw) -> EdgeNode:
    node = EdgeNode(
        BrokerUrl.parse(broker.url), group_id, "edge1", state_dir=tmp_path / "state", primary_host_id=HOST, **kw
    )
    node.add_device("d").add_metric("v", DataType.Int64, 0)
    return node


@pytest.mark.spec(
    "tck-id-message-flow-edge-node-birth-publish-phid-wait",
    "tck-id-message-flow-edge-node-birth-publish-phid-wait-id",
    "tck-id-message-flow-edge-node-birth-publish-phid-wait-online",
    "tck-id-operational-behavior-edge-node-birth-sequence-wait",
    "tck-id-operational-behavior-primary-application-state-with-multiple-servers-state-subs",
)
async def test_births_wait_for_the_configured_primary_host_to_be_online(broker, group_id, tmp_path):
    t0 = now_ms()
    await send_state(broker, HOST, False, t0)  # the host's retained Will: offline
    node = make_node(broker, group_id, tmp_path)
    async with Observer(broker) as obs, node:
        await wait_until(lambda: node.stats.connects == 1, what="the MQTT session")
        await send_state(broker, "another-host", True, t0 + 1)  # not our primary host
        await asyncio.sleep(0.3)
        assert not obs.of(MT.NBIRTH, MT.DBIRTH) and not node.online
        await node.update("d", {"v": 1})  # while waiting: kept for later, not published
        assert not obs.of(MT.DDATA) and node.outbox_size == 1
        await send_state(broker, HOST, True, t0 + 2)
        birth = await obs.wait_type(MT.NBIRTH)
        await obs.wait_type(MT.DBIRTH)
        historical = await obs.wait_type(MT.DDATA)
    assert birth.metric("bdSeq").value == node.bdseq
    assert historical.payload.metrics[0].is_historical
    assert node.stats.connects == 1, "waiting is done connected, not by reconnecting"


async def test_state_subscription_is_qos1_and_precedes_the_nbirth(tmp_path, group_id):
    with debug_broker(tmp_path) as broker:
        await send_state(broker, HOST, True, now_ms())
        node = make_node(broker, group_id, tmp_path, client_id="waiting-edge")
        async with Observer(broker) as obs, node:
            await obs.wait_type(MT.NBIRTH)
        lines = broker_log(broker)
    sub = next(i for i, x in enumerate(lines) if re.search(rf"\tspBv1\.0/STATE/{HOST} \(QoS 1\)", x))
    birth = next(i for i, x in enumerate(lines) if re.search(r"Received PUBLISH from waiting-edge .*NBIRTH", x))
    assert sub < birth


@pytest.mark.spec(
    "tck-id-message-flow-edge-node-birth-publish-phid-offline",
    "tck-id-operational-behavior-edge-node-termination-host-offline",
    "tck-id-operational-behavior-edge-node-termination-host-offline-reconnect",
    "tck-id-operational-behavior-primary-application-state-with-multiple-servers-walk",
    "tck-id-topics-nbirth-bdseq-increment",
)
async def test_host_offline_sends_ndeath_reconnects_with_new_bdseq_and_waits_for_online(broker, group_id, tmp_path):
    t0 = now_ms()
    await send_state(broker, HOST, True, t0)
    node = make_node(broker, group_id, tmp_path)
    async with Observer(broker) as obs, node:
        first = await obs.wait_type(MT.NBIRTH)
        await send_state(broker, HOST, False, t0)  # same timestamp as the online: valid (>=)
        death = await obs.wait_type(MT.NDEATH)
        assert death.metric("bdSeq").value == first.metric("bdSeq").value
        await wait_until(lambda: node.stats.connects == 2, what="a new MQTT session")
        await asyncio.sleep(0.3)
        assert len(obs.of(MT.NBIRTH)) == 1, "no births while the host is offline"
        await node.update("d", {"v": 7})
        await send_state(broker, HOST, True, t0 + 10)
        second = await obs.wait_for(lambda m: m.type is MT.NBIRTH and m is not first)
        data = await obs.wait_for(lambda m: m.type is MT.DDATA and obs.messages.index(m) > obs.messages.index(second))
    assert second.metric("bdSeq").value == first.metric("bdSeq").value + 1
    book = AliasBook()
    book.learn(obs.of(MT.DBIRTH)[-1])
    assert book.values(data) == {"v": 7} and data.payload.metrics[0].is_historical


@pytest.mark.spec(
    "tck-id-operational-behavior-edge-node-termination-host-offline-timestamp",
    "tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp",
)
async def test_stale_state_messages_are_ignored(broker, group_id, tmp_path):
    t0 = now_ms()
    await send_state(broker, HOST, True, t0)
    node = make_node(broker, group_id, tmp_path)
    async with Observer(broker) as obs, node:
        await obs.wait_type(MT.NBIRTH)
        # The Will of an older host session arriving late: must not knock this session over.
        await send_state(broker, HOST, False, t0 - 1000)
        await send_state(broker, HOST, True, t0 + 5)
        await send_state(broker, HOST, True, t0 + 3)  # older than the last one seen
        await send_state(broker, HOST, False, t0 + 4)  # older than the last online
        await publish(broker, f"spBv1.0/STATE/{HOST}", b"not json", qos=1)
        await wait_until(lambda: node.stats.state_ignored == 4, what="4 ignored STATE messages")
        await node.update("d", {"v": 1})
        await obs.wait_type(MT.DDATA)
    assert not obs.of(MT.NDEATH)[:-1], "only the NDEATH of the final stop"
    assert node.stats.connects == 1


async def test_sparkplug_22_hosts_plain_online_offline_state_is_understood_when_enabled(broker, group_id, tmp_path):
    await publish(broker, legacy_state_topic(HOST), b"OFFLINE", qos=1, retain=True)
    node = make_node(broker, group_id, tmp_path, accept_legacy_state=True)
    async with Observer(broker) as obs, node:
        await wait_until(lambda: node.stats.connects == 1, what="the MQTT session")
        await asyncio.sleep(0.2)
        assert not obs.of(MT.NBIRTH)
        await publish(broker, legacy_state_topic(HOST), b"ONLINE", qos=1, retain=True)
        first = await obs.wait_type(MT.NBIRTH)
        await publish(broker, legacy_state_topic(HOST), b"OFFLINE", qos=1, retain=True)
        await obs.wait_type(MT.NDEATH)
        await publish(broker, legacy_state_topic(HOST), b"ONLINE", qos=1, retain=True)
        second = await obs.wait_for(lambda m: m.type is MT.NBIRTH and m is not first)
    assert second.metric("bdSeq").value == first.metric("bdSeq").value + 1
