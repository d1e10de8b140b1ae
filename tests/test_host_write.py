"""Primary host writes: NCMD/DCMD with alias, name, datatype and timestamp; operator-readable refusals."""

from __future__ import annotations

import pytest

from hub.errors import WriteError
from hub.mqtt import BrokerUrl
from hub.sparkplug.payload import DataType, Metric, PropertyValue, now_ms, parse_payload
from hub.sparkplug.topic import MessageType
from sparkplug_fakes import FakeEdge, make_host, running, wait_until

NODE = [Metric("Setpoints/Speed", DataType.Float, 1.0, alias=10)]
DEVICE = [
    Metric("Valve/Open", DataType.Boolean, False, alias=20),
    Metric("Level", DataType.Int16, 0, alias=21),
    Metric("Recipe", DataType.String, "A", alias=22),
    Metric("Serial", DataType.String, "X1", alias=23,
           properties={"readOnly": PropertyValue(DataType.Boolean, True)}),
]


async def started(broker, group_id, **kw):
    host = make_host(broker.url, **kw)
    edge = FakeEdge(BrokerUrl.parse(broker.url), group_id, "n1")
    return host, edge


@pytest.mark.spec(
    "tck-id-topics-dcmd-topic",
    "tck-id-topics-dcmd-mqtt",
    "tck-id-topics-dcmd-timestamp",
    "tck-id-topics-dcmd-payload",
    "tck-id-payloads-dcmd-timestamp",
    "tck-id-payloads-dcmd-seq",
    "tck-id-payloads-dcmd-qos",
    "tck-id-payloads-dcmd-retain",
    "tck-id-payloads-name-cmd-requirement",
    "tck-id-operational-behavior-data-commands-dcmd-verb",
    "tck-id-operational-behavior-data-commands-dcmd-metric-name",
    "tck-id-operational-behavior-data-commands-dcmd-metric-value",
    "tck-id-topics-ncmd-topic",
    "tck-id-topics-ncmd-mqtt",
    "tck-id-topics-ncmd-timestamp",
    "tck-id-topics-ncmd-payload",
    "tck-id-payloads-ncmd-timestamp",
    "tck-id-payloads-ncmd-seq",
    "tck-id-payloads-ncmd-qos",
    "tck-id-payloads-ncmd-retain",
    "tck-id-operational-behavior-data-commands-ncmd-verb",
    "tck-id-operational-behavior-data-commands-ncmd-metric-name",
    "tck-id-operational-behavior-data-commands-ncmd-metric-value",
)
async def test_write_with_command_names_sends_dcmd_and_ncmd_with_alias_name_datatype_and_timestamp(broker, group_id):
    # Chapter 5 says a command SHOULD name the metric, chapter 6 that it MUST carry the alias only; the
    # default follows the MUST, `host.command_names: true` (compact_commands=False) the SHOULD.
    host, edge = await started(broker, group_id, compact_commands=False)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(NODE)
        await edge.dbirth("d1", DEVICE)
        await wait_until(lambda: host.node_online(group_id, "n1", "d1"), what="the device")

        before = now_ms()
        await host.write(f"uns/{group_id}/n1/d1/Valve/Open", True)  # by UNS path
        await host.write(f"{group_id}/n1/Setpoints/Speed", 2.5)  # by Sparkplug address
        await host.write(f"{group_id}/n1/d1/Level", -3)
        await wait_until(lambda: len(edge.commands) == 3, what="three commands")
        after = now_ms()

        (t1, p1, qos1, retain1), (t2, p2, qos2, retain2), (t3, p3, _, _) = edge.commands
        assert t1.message_type is MessageType.DCMD and t1.device_id == "d1" and t1.group_id == group_id
        assert (qos1, retain1) == (0, False)
        assert p1.seq is None and before <= p1.timestamp <= after
        [m1] = p1.metrics
        assert (m1.name, m1.alias, m1.datatype, m1.value) == ("Valve/Open", 20, DataType.Boolean, True)
        assert before <= m1.timestamp <= after

        assert t2.message_type is MessageType.NCMD and t2.device_id is None
        assert (qos2, retain2) == (0, False) and p2.seq is None
        [m2] = p2.metrics
        assert (m2.name, m2.alias, m2.datatype, m2.value) == ("Setpoints/Speed", 10, DataType.Float, 2.5)

        [m3] = p3.metrics
        assert (m3.alias, m3.datatype, m3.value) == (21, DataType.Int16, -3)
        assert host.diagnostics()["writes"] == 3
        await edge.close()


@pytest.mark.spec("tck-id-payloads-alias-data-cmd-requirement")
async def test_commands_name_the_metric_by_alias_only_by_default(broker, group_id):
    host, edge = await started(broker, group_id)
    async with running(host):
        await host.wait_online()
        await edge.connect()
        await edge.nbirth(NODE)
        await wait_until(lambda: host.node_online(group_id, "n1"), what="the node")
        await host.write(f"uns/{group_id}/n1/Setpoints/Speed", 4)
        await wait_until(lambda: edge.commands, what="the command")
        raw = parse_payload(edge.raw_commands[0])
        [m] = raw.metrics
        # The datatype stays (a deliberate SHOULD NOT deviation, see hub/sparkplug/host.py): Tahu needs it.
        assert not m.HasField("name") and m.datatype == DataType.Float
        assert m.alias == 10 and m.float_value == 4.0 and raw.HasField("timestamp") and not raw.HasField("seq")
        await edge.close()


async def test_write_rejects_unknown_paths_bad_values_read_only_metrics_and_offline_devices(broker, group_id):
    host, edge = await started(broker, group_id)
    async with running(host):
        await host.wait_online()
        with pytest.raises(WriteError, match="no metric at"):
            await host.write(f"uns/{group_id}/n1/d1/Level", 1)
        await edge.connect()
        await edge.nbirth(NODE)
        await edge.dbirth("d1", DEVICE)
        await wait_until(lambda: host.node_online(group_id, "n1", "d1"), what="the device")
        level = f"uns/{group_id}/n1/d1/Level"
        with pytest.raises(WriteError, match=r"Int16.*out of range"):
            await host.write(level, 40000)
        with pytest.raises(WriteError, match="Int16 needs an integer"):
            await host.write(level, "high")
        with pytest.raises(WriteError, match="Boolean needs true or false"):
            await host.write(f"uns/{group_id}/n1/d1/Valve/Open", 1)
        with pytest.raises(WriteError, match="read-only"):
            await host.write(f"uns/{group_id}/n1/d1/Serial", "X2")
        with pytest.raises(WriteError, match="no metric at"):
            await host.write(f"uns/{group_id}/n1/d1/Nope", 1)
        await edge.ddeath("d1")
        await wait_until(lambda: not host.node_online(group_id, "n1", "d1"), what="the device to die")
        with pytest.raises(WriteError, match="offline"):
            await host.write(level, 1)
        await edge.ndeath()
        await wait_until(lambda: not host.node_online(group_id, "n1"), what="the node to die")
        with pytest.raises(WriteError, match=f"edge node {group_id}/n1 is offline"):
            await host.write(f"uns/{group_id}/n1/Setpoints/Speed", 1.0)
        await edge.barrier(host)
        assert edge.commands == []
        await edge.close()
