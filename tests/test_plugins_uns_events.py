"""The built-in uns_events plugin: events on the UNS, loaded through the default-plugin path."""

from __future__ import annotations

from hub.app import Hub
from hub.events import Event, Severity
from hub.mqtt import BrokerUrl
from hub.sparkplug.payload import DataType, Metric
from plugin_support import config
from sparkplug_fakes import FakeEdge, Watcher, running, wait_until


async def test_emitted_events_appear_on_the_uns_and_node_status_is_left_to_the_mirror(broker, group_id, tmp_path):
    url = BrokerUrl.parse(broker.url)
    hub = Hub(config(tmp_path, broker.url))  # default plugins: uns_events is built in
    assert hub.plugins.status["uns_events"].version == "built-in"
    watcher = await Watcher(url, "w").start(f"uns/{group_id}/#")
    edge = FakeEdge(url, group_id, "oven")
    async with running(hub):
        await hub.host.wait_online()
        await edge.connect()
        await edge.nbirth([Metric("temperature", DataType.Double, 180.0, alias=1)])
        await watcher.wait_for(f"uns/{group_id}/oven/_status")
        hub.emit_events([Event("alarm", f"uns/{group_id}/oven", 1_700_000_000_000, Severity.HIGH,
                               {"limit": 250.0, "value": 262.5}, source="alarms")])
        message = await watcher.wait_for(f"uns/{group_id}/oven/_events/alarm")
        assert not message.retain and message.json() == {
            "kind": "alarm", "path": f"uns/{group_id}/oven", "time": 1_700_000_000_000, "severity": "HIGH",
            "payload": {"limit": 250.0, "value": 262.5}, "attachments": [], "source": "alarms"}
        consumer = hub.bus.consumer("uns_events", "events")
        await wait_until(lambda: consumer.delivered_batches == 2, what="both event batches")  # node_status + alarm
    assert not watcher.on(f"uns/{group_id}/oven/_events/node_status")
    await watcher.stop()
    await edge.close()
