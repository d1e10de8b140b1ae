"""Plantbus reference connector `http_json`: polls HTTP endpoints that answer JSON and publishes chosen values.

Every configured device is an HTTP endpoint (a checkweigher's or printer's status API, a gateway) polled
every `interval_s`; each point maps an RFC 6901 JSON pointer in the answer to a Sparkplug metric with a
datatype. A failed poll marks the device's metrics BAD (values kept); it is logged once when the failure
starts and once when the device answers again. A writable point is written with an HTTP PATCH carrying a
JSON merge patch (RFC 7396) built from its pointer. docs/connectors.md walks through this file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import ConnectorContext, ConnectorSettings, ConnectorType
from hub.errors import PayloadError, PlantbusError, WriteError
from hub.plugins import hookimpl
from hub.sparkplug.edge import EdgeNode, Quality
from hub.sparkplug.payload import DataType, coerce, now_ms

log = logging.getLogger(__name__)

TYPE_NAME = "http_json"
# JSON has numbers, strings and booleans; these are the Sparkplug types they map to without surprises.
DATATYPES = ("Boolean", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float", "Double",
             "String", "Text")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JsonPoint(_Model):
    """One metric: where its value is in the JSON answer and what Sparkplug type it has."""

    name: str = Field(min_length=1, description="Sparkplug metric name, e.g. weight_g")
    pointer: str = Field(description="RFC 6901 JSON pointer into the answer, e.g. /last/weight_g")
    datatype: str = Field("Double", description=f"one of {', '.join(DATATYPES)}")
    unit: str | None = Field(None, description="engineering unit, published as the engUnit property")
    deadband: float | None = Field(None, ge=0, description="numeric change below which nothing is published")
    writable: bool = Field(False, description="accept DCMD writes, sent as a JSON merge patch to the device's write_url")

    @field_validator("pointer")
    @classmethod
    def _pointer(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"a JSON pointer starts with '/' (e.g. /{value}); '' means the whole answer")
        return value

    @field_validator("datatype")
    @classmethod
    def _datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"{value!r} is not a JSON-friendly Sparkplug type; use one of {', '.join(DATATYPES)}")
        return value

    def tokens(self) -> list[str]:
        """The pointer's reference tokens, unescaped (~1 is '/', ~0 is '~')."""
        return [t.replace("~1", "/").replace("~0", "~") for t in self.pointer.split("/")[1:]]


class HttpDevice(_Model):
    """One HTTP endpoint, published as one Sparkplug device."""

    device_id: str = Field(min_length=1, description="Sparkplug device id, e.g. checkweigher")
    url: str = Field(description="GET this URL; it must answer a JSON document")
    write_url: str | None = Field(None, description="PATCH writes here (defaults to url)")
    interval_s: float = Field(1.0, gt=0, description="seconds between polls")
    timeout_s: float = Field(2.0, gt=0, le=60, description="seconds one request may take")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers, e.g. an API key")
    points: list[JsonPoint] = Field(min_length=1)

    @field_validator("url", "write_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> HttpDevice:
        seen: set[str] = set()
        for point in self.points:
            if point.name.lower() in seen:
                raise ValueError(f"point name {point.name!r} is used twice (names are compared ignoring case)")
            seen.add(point.name.lower())
        return self


class HttpJsonSettings(ConnectorSettings):
    """A `connectors.<name>` section of type http_json: the edge node and its HTTP devices."""

    devices: list[HttpDevice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_devices(self) -> HttpJsonSettings:
        ids = [d.device_id for d in self.devices]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"device_id {', '.join(twice)} is used more than once; every device needs its own id")
        return self


class PointMissing(PlantbusError):
    """The answer has no value at a point's pointer, or one of the wrong type."""


def resolve(document: Any, point: JsonPoint) -> Any:
    """The value at the point's pointer, coerced to its datatype (PointMissing if absent or mistyped)."""
    node = document
    for token in point.tokens():
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PointMissing(f"{point.name}: nothing at {point.pointer} in the answer")
    try:
        return coerce(DataType.parse(point.datatype), node)
    except PayloadError as exc:
        raise PointMissing(f"{point.name}: the value at {point.pointer} is not a {point.datatype} ({exc})") from None


def merge_patch(point: JsonPoint, value: Any) -> dict[str, Any]:
    """The RFC 7396 merge patch that sets the point's pointer to `value`."""
    tokens = point.tokens()
    if not tokens:
        raise WriteError(f"{point.name}: a point at the whole answer ('') cannot be written; give it a pointer")
    patch: Any = value
    for token in reversed(tokens):
        patch = {token: patch}
    return patch


def _request(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers={"Accept": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read()
    return json.loads(data) if data else None


async def http_json(method: str, url: str, body: Any = None, *, headers: dict[str, str], timeout: float) -> Any:
    """One HTTP request, answer parsed as JSON; the blocking urllib call runs in a worker thread."""
    raw = None if body is None else json.dumps(body).encode()
    if raw is not None:
        headers = {"Content-Type": "application/merge-patch+json", **headers}
    # urllib is blocking: asyncio.to_thread is the one boundary, and `timeout` bounds how long a thread lives.
    return await asyncio.to_thread(_request, method, url, raw, headers, timeout)


Fetch = Callable[..., Any]


class DeviceCoordinator:
    """Polls one HTTP device and reports its points; owns its failure state so each device fails on its own."""

    def __init__(self, device: HttpDevice, edge: EdgeNode, fetch: Fetch = http_json) -> None:
        self.device = device
        self.edge = edge
        self.fetch = fetch
        self.points = {p.name: p for p in device.points}
        self.failing: str | None = None  # why the last poll failed, None while the device answers
        self.missing: set[str] = set()  # points whose pointer found nothing usable in the last answer
        self.polls = 0
        self.failures = 0
        self.writes = 0
        self.last_poll_ms: int | None = None
        self._poll_now = asyncio.Event()

    async def run(self) -> None:
        """Poll every interval_s (or at once after a write) until cancelled."""
        while True:
            await self.poll()
            self._poll_now.clear()
            try:
                await asyncio.wait_for(self._poll_now.wait(), self.device.interval_s)
            except TimeoutError:
                pass

    async def poll(self) -> None:
        """Read the endpoint once and publish what changed; on failure mark every point BAD."""
        self.polls += 1
        self.last_poll_ms = now_ms()
        try:
            document = await self.fetch("GET", self.device.url, headers=self.device.headers,
                                        timeout=self.device.timeout_s)
        except (OSError, ValueError) as exc:  # URLError, refused, timeout, HTTP error status, not JSON
            await self._failed(f"{type(exc).__name__}: {exc}")
            return
        values: dict[str, Any] = {}
        quality: dict[str, Quality] = {}
        missing: set[str] = set()
        for name, point in self.points.items():
            try:
                values[name] = resolve(document, point)
            except PointMissing as exc:
                values[name] = self.edge.device(self.device.device_id).metrics[name].value  # keep the last value
                quality[name] = Quality.BAD
                missing.add(name)
                if name not in self.missing:
                    log.warning("HTTP device %s: %s", self.device.device_id, exc)  # once per streak
        for name in self.missing - missing:
            log.info("HTTP device %s: %s is readable again", self.device.device_id, name)
        self.missing = missing
        await self.edge.update(self.device.device_id, values, quality=quality)
        if self.failing is not None:
            log.info("HTTP device %s answers again at %s", self.device.device_id, self.device.url)
            self.failing = None

    async def _failed(self, why: str) -> None:
        self.failures += 1
        if self.failing is None:
            # Logged once when the failure starts (an endpoint down for an hour is one line, not 3600).
            log.warning("HTTP device %s at %s failed: %s; its values are BAD until it answers",
                        self.device.device_id, self.device.url, why)
        self.failing = why
        await self.edge.set_quality(self.device.device_id, Quality.BAD)

    async def write(self, name: str, value: Any) -> None:
        """Send a DCMD write to the device as a JSON merge patch, then poll at once to report the real value."""
        point = self.points.get(name)
        if point is None or not point.writable:
            raise WriteError(f"{name!r} is not a writable point of HTTP device {self.device.device_id}")
        try:
            await self.fetch("PATCH", self.device.write_url or self.device.url, merge_patch(point, value),
                             headers=self.device.headers, timeout=self.device.timeout_s)
        except (OSError, ValueError) as exc:
            raise WriteError(f"HTTP device {self.device.device_id} refused the write of {name}: {exc}") from None
        self.writes += 1
        self._poll_now.set()

    def diagnostics(self) -> dict[str, Any]:
        """Polling state of this device."""
        return {"url": self.device.url, "failing": self.failing, "missing": sorted(self.missing), "polls": self.polls,
                "failures": self.failures, "writes": self.writes, "last_poll_ms": self.last_poll_ms}


class HttpJsonConnector:
    """A Sparkplug edge node publishing HTTP JSON devices; run() until cancelled, NDEATH on the way out."""

    def __init__(self, name: str, settings: HttpJsonSettings, context: ConnectorContext,
                 *, fetch: Fetch = http_json) -> None:
        self.name = name
        self.settings = settings
        self.edge = EdgeNode(context.broker, settings.group_id, settings.edge_node_id,
                             state_dir=context.state_dir / name, primary_host_id=context.primary_host_id,
                             on_write=self._on_write)
        self.coordinators: dict[str, DeviceCoordinator] = {}
        for device in settings.devices:
            target = self.edge.add_device(device.device_id)
            for point in device.points:
                target.add_metric(point.name, point.datatype, None,  # unknown until the first poll
                                  writable=point.writable, deadband=point.deadband,
                                  properties={"engUnit": point.unit} if point.unit else None)
            self.coordinators[device.device_id] = DeviceCoordinator(device, self.edge, fetch)

    async def _on_write(self, device_id: str | None, metric: str, value: Any) -> None:
        coordinator = self.coordinators.get(device_id or "")
        if coordinator is None:
            raise WriteError(f"{metric!r} is not on an HTTP device of edge node {self.edge.edge_node_id}")
        await coordinator.write(metric, value)

    async def run(self) -> None:
        """Run the edge node and one poller per device until cancelled."""
        edge_task = self.edge.start()
        try:
            async with asyncio.TaskGroup() as tg:
                for device_id, coordinator in self.coordinators.items():
                    tg.create_task(coordinator.run(), name=f"plantbus[connector:{self.name}].poll.{device_id}")
        finally:
            await self.edge.stop()  # NDEATH, so the host marks the values STALE at once
            await asyncio.gather(edge_task, return_exceptions=True)
            self.edge.close()

    def diagnostics(self) -> dict[str, Any]:
        """Edge node state and each device's polling state."""
        return {"type": TYPE_NAME, "online": self.edge.online,
                "devices": {d: c.diagnostics() for d, c in self.coordinators.items()}}


def sample_settings() -> dict[str, Any]:
    """A `connectors` mapping for the salad line's checkweigher status API (valid for HttpJsonSettings)."""
    return {
        "salad_checkweigher": {
            "type": TYPE_NAME,
            "group_id": "plant1",
            "edge_node_id": "salad-checkweigher",
            "devices": [{
                "device_id": "checkweigher",
                "url": "http://10.20.1.31/api/status",
                "interval_s": 1.0,
                "timeout_s": 2.0,
                "points": [
                    {"name": "weight_g", "pointer": "/last/weight_g", "datatype": "Double", "unit": "g",
                     "deadband": 0.5},
                    {"name": "accepted", "pointer": "/counters/accepted", "datatype": "Int64"},
                    {"name": "rejected", "pointer": "/counters/rejected", "datatype": "Int64"},
                    {"name": "running", "pointer": "/state/running", "datatype": "Boolean"},
                    {"name": "target_g", "pointer": "/setup/target_g", "datatype": "Double", "unit": "g",
                     "writable": True},
                ],
            }],
        }
    }


def sample_yaml() -> str:
    """The sample as the `connectors:` block of a hub configuration file."""
    for section in sample_settings().values():
        HttpJsonSettings.model_validate(section)  # the sample must never drift from the model
    return yaml.safe_dump({"connectors": sample_settings()}, sort_keys=False)


class Plugin:
    """The entry point: registers the `http_json` connector type with the hub."""

    @hookimpl
    def register_connectors(self, register: Callable[[str, Any], None]) -> None:
        """Offer the `http_json` connector type."""
        register(TYPE_NAME, ConnectorType(settings=HttpJsonSettings, create=HttpJsonConnector))


if __name__ == "__main__":
    print(sample_yaml(), end="")
