"""Primary host: seq checking, the reorder window, rebirth requests and their debounce."""

from __future__ import annotations

import time

import pytest

from hub.mqtt import BrokerUrl
from hub.sparkplug.payload import DataType, Metric
from hub.sparkplug.topic import MessageType
from sparkplug_fakes import FakeEdge, Recorder, make_host, running, wait_until

METRICS = [Metric("A", DataType.Int32, 0, alias=1)]


def a(group: str) -> str:
    return f"uns/{group}/n1/A"


def values(rec: Recorder, path: str) -> list[int]:
    return [s.value for s in rec.samples if s.path == path]


REBIRTH_REQUEST_IDS = (
    "tck-id-operational-behavior-data-commands-ncmd-rebirth-verb",
    "tck-id-operational-behavior-data-commands-ncmd-rebirth-name",
    "tck-id-operational-behavior-data-commands-ncmd-rebirth-value",
    "tck-id-topics-ncmd-topic",
    "tck-id-topics-ncmd-mqtt",
    "tck-id-payloads-ncmd-qos",
    "tck-id-payloads-ncmd-retain",
    "tck-id-payloads-ncmd-timestamp",
    "tck-id-payloads-ncmd-seq",
    "tck-id-topics-ncmd-timestamp",
)


def assert_is_rebirth_request(edge: FakeEdge) -> None:
    topic, payload, qos, retain = edge.commands[0]
    assert topic.message_type is MessageType.NCMD
    assert (topic.group_id, topic.edge_node_id) == (edge.group, edge.edge_node)
    assert (qos, retain) == (0, False)
    assert payload.seq is None and payload.timestamp is not None
    [metric] = payload.metrics
    assert (metric.name, metric.datatype, metric.value, metric.alias) == (
        "Node Control/Rebirth", DataType.Boolean, True, None)


@pytest.mark.spec(
    "tck-id-operational-behavior-host-reordering-param",
    "tck-id-operational-behavior-host-reordering-start",
    "tck-id-operational-behavior-host-reordering-rebirth",
    *REBIRTH_REQUEST_IDS,
)
async def test_seq_gap_requests_a_rebirth_when_the_reorder_timeout_elapses(broker, group_id):
    host = make_host(broker.url, reorder_timeout_ms=400)
    rec = Recorder(host)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(METRICS)
        await edge.ndata([Metric(None, DataType.Int32, 1, alias=1)], seq=1)
        await rec.wait_value(a(group_id), 1)
        sent = time.monotonic()
        await edge.ndata([Metric(None, DataType.Int32, 3, alias=1)], seq=3)  # seq 2 never comes
        await wait_until(edge.rebirth_requests, timeout=3, what="a rebirth request")
        waited = time.monotonic() - sent
        assert 0.35 <= waited < 2.0, waited
        assert_is_rebirth_request(edge)
        assert host.stats.seq_gaps == 1
        # the held message was still processed (its value is real), then DATA is ignored until NBIRTH
        assert values(rec, a(group_id))[-1] == 3
        await edge.ndata([Metric(None, DataType.Int32, 4, alias=1)], seq=4)
        await wait_until(lambda: host.stats.ignored_awaiting_birth == 1, what="DATA to be ignored")
        assert 4 not in values(rec, a(group_id))
        await edge.nbirth([Metric("A", DataType.Int32, 5, alias=1)])
        await edge.ndata([Metric(None, DataType.Int32, 6, alias=1)])
        await rec.wait_value(a(group_id), 6)
        await edge.close()


@pytest.mark.spec(
    "tck-id-operational-behavior-host-reordering-start",
    "tck-id-operational-behavior-host-reordering-success",
)
async def test_reordered_messages_within_the_timeout_are_processed_in_seq_order_without_rebirth(broker, group_id):
    host = make_host(broker.url, reorder_timeout_ms=2000)
    rec = Recorder(host)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(METRICS)
        await edge.ndata([Metric(None, DataType.Int32, 1, alias=1)], seq=1)
        await edge.ndata([Metric(None, DataType.Int32, 3, alias=1)], seq=3)
        await edge.ndata([Metric(None, DataType.Int32, 4, alias=1)], seq=4)
        await edge.dbirth("d1", [Metric("B", DataType.Int32, 20, alias=2)], seq=5)
        await edge.ndata([Metric(None, DataType.Int32, 2, alias=1)], seq=2)
        await rec.wait_value(f"uns/{group_id}/n1/d1/B", 20)
        assert values(rec, a(group_id)) == [0, 1, 2, 3, 4]
        assert host.stats.reorders == 3 and host.stats.seq_gaps == 0
        # the timer was stopped: nothing fires after the window either
        await edge.ddata("d1", [Metric(None, DataType.Int32, 21, alias=2)], seq=6)
        await rec.wait_value(f"uns/{group_id}/n1/d1/B", 21)
        await edge.barrier(host)
        assert edge.rebirth_requests() == [] and host.stats.rebirths_requested == 0
        await edge.close()


async def test_seq_wraps_from_255_to_0(broker, group_id):
    host = make_host(broker.url)
    rec = Recorder(host)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(METRICS, seq=254)
        await edge.ndata([Metric(None, DataType.Int32, 1, alias=1)])  # 255
        await edge.ndata([Metric(None, DataType.Int32, 2, alias=1)])  # 0
        await edge.ndata([Metric(None, DataType.Int32, 3, alias=1)])  # 1
        await rec.wait_value(a(group_id), 3)
        assert host.stats.seq_gaps == 0 and host.stats.rebirths_requested == 0
        await edge.close()


@pytest.mark.spec(*REBIRTH_REQUEST_IDS)
async def test_data_before_birth_requests_one_rebirth_debounced(broker, group_id):
    host = make_host(broker.url, rebirth_debounce_ms=5000)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.ndata([Metric(None, DataType.Int32, 1, alias=1)], seq=7)
        await edge.ddata("d1", [Metric(None, DataType.Int32, 1, alias=2)], seq=8)
        await edge.publish(MessageType.DBIRTH, [Metric("B", DataType.Int32, 1, alias=2)], device="d1", seq=9)
        await wait_until(lambda: host.stats.rebirths_debounced == 2, what="the later triggers to be debounced")
        await edge.barrier(host)
        assert len(edge.rebirth_requests()) == 1 and host.stats.rebirths_requested == 1
        assert_is_rebirth_request(edge)
        assert host.diagnostics()["rebirth_reasons"]["data_before_birth"] == 3
        await edge.close()


async def test_rebirth_debounce_lets_a_later_request_through(broker, group_id):
    host = make_host(broker.url, rebirth_debounce_ms=300)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.ndata([Metric(None, DataType.Int32, 1, alias=1)], seq=1)
        await wait_until(edge.rebirth_requests, what="the first rebirth request")
        first = time.monotonic()
        while len(edge.rebirth_requests()) < 2:
            await edge.ndata([Metric(None, DataType.Int32, 1, alias=1)], seq=1)
            await edge.barrier(host)
        assert time.monotonic() - first >= 0.29
        await edge.close()


async def test_a_quiet_node_whose_request_was_debounced_is_asked_again_when_the_window_ends(broker, group_id):
    host = make_host(broker.url, rebirth_debounce_ms=400)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.ndata([Metric(None, DataType.Int32, 1, alias=1)], seq=1)
        await wait_until(edge.rebirth_requests, what="the first rebirth request")
        first = time.monotonic()
        await edge.ndata([Metric(None, DataType.Int32, 2, alias=1)], seq=2)  # debounced, then silence
        await wait_until(lambda: len(edge.rebirth_requests()) == 2, timeout=5, what="the retried request")
        assert time.monotonic() - first >= 0.39
        assert host.diagnostics()["rebirth_reasons"]["retry_after_debounce"] == 1
        await edge.close()


async def test_unknown_alias_and_ddata_before_dbirth_request_rebirth_and_the_rebirth_rebuilds_state(broker, group_id):
    host = make_host(broker.url, rebirth_debounce_ms=5000)
    rec = Recorder(host)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1", auto_rebirth=True)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(METRICS)
        await edge.ndata([Metric(None, DataType.Int32, 9, alias=99)])  # alias 99 was never born
        await wait_until(edge.rebirth_requests, what="a rebirth request for the unknown alias")
        assert host.diagnostics()["rebirth_reasons"] == {"unknown_metric": 1}
        # the fake edge answers with a new NBIRTH; data flows again afterwards
        await wait_until(lambda: not host._nodes[(group_id, "n1")].awaiting_birth, what="the rebirth")
        await edge.ndata([Metric(None, DataType.Int32, 10, alias=1)])
        await rec.wait_value(a(group_id), 10)

        # DDATA for a device that never sent DBIRTH
        edge2 = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n2")
        await edge2.connect()
        await edge2.nbirth(METRICS)
        await edge2.ddata("ghost", [Metric(None, DataType.Int32, 1, alias=5)])
        await wait_until(edge2.rebirth_requests, what="a rebirth request for DDATA before DBIRTH")
        assert host.diagnostics()["rebirth_reasons"]["ddata_before_dbirth"] == 1
        await edge.close()
        await edge2.close()
