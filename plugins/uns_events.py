"""Built-in plugin: events (alarms, camera detections, downtime, ...) as JSON messages on the UNS.

Each event a plugin or the hub emits is published, not retained, on `<event path>/_events/<kind>`
through the hub's own MQTT connection, so SCADA, Node-RED and dashboards see them next to the values.
`node_status` events are left out by default: the UNS mirror already keeps `<path>/_status` retained.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from hub.bus import event_json
from hub.plugins import hookimpl
from hub.uns_paths import UnsPath

if TYPE_CHECKING:
    from hub.app import Hub
    from hub.events import Event

NAME = "uns_events"


class Settings(BaseModel):
    """`plugins.uns_events` in the hub's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: str = Field("_events", description="topic level between the event's path and its kind")
    # cv_detection: the CV edge node already publishes each event on `<camera path>/cv/events`.
    skip_kinds: list[str] = Field(["node_status", "cv_detection"], description="event kinds not to publish")
    qos: int = Field(1, ge=0, le=1, description="MQTT QoS of the event messages")


class HubNotConnected(Exception):
    """The hub's MQTT connection is down; the bus retries the batch with backoff."""


@hookimpl
def register_settings(register) -> None:  # type: ignore[no-untyped-def]
    register(NAME, Settings)


@hookimpl
async def on_events(events: list[Event], hub: Hub) -> None:
    settings: Settings = hub.plugin_settings(NAME)  # type: ignore[assignment]
    messages = []
    for event in events:
        if event.kind in settings.skip_kinds:
            continue
        topic = str(UnsPath.parse(event.path).child(settings.level, event.kind))
        messages.append((topic, json.dumps(event_json(event), separators=(",", ":"), default=str).encode()))
    if messages and not hub.host.online:
        # Waiting keeps the events in this plugin's bus queue (spilling to disk if it fills) until the
        # broker is back, instead of failing them into the dead-letter file during an outage.
        await hub.host.wait_online()
    for i, (topic, payload) in enumerate(messages):
        if not hub.host.publish_nowait(topic, payload, qos=settings.qos, retain=False):
            # The connection dropped under us: the bus retries the batch with backoff. Messages before i
            # may then go out twice (at least once, like the rest of the bus).
            raise HubNotConnected(f"hub not connected to the broker; {len(messages) - i} event messages wait")
