"""The reference connector of docs/connectors/plantbus-connector-example, installed the way pip would, run by a
hub against a real broker and a real (local) HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.app import Hub
from hub.errors import ConfigError
from hub.samples import Quality
from plugin_support import config, fake_distribution
from sparkplug_fakes import Recorder, running, wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "connectors" / "plantbus-connector-example"


def install_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's own pyproject names its entry point; write the dist-info pip would and put it on sys.path."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = fake_distribution(tmp_path / "site", project["name"], project["version"], {},
                             project["entry-points"]["plantbus"])
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE))


class JsonEndpoint:
    """A tiny HTTP/1.1 server on a loopback port: GET answers `document` as JSON, PATCH merges into it (RFC 7396)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.port = 0
        self.patches: list[Any] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/status"

    async def start(self) -> JsonEndpoint:
        # Port 0 the first time (a free one); the same port again after stop(), like a device that comes back.
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method = head[0].split(" ")[0]
            length = next((int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length) if length else b""
            if method == "PATCH":
                patch = json.loads(body)
                self.patches.append(patch)
                merge(self.document, patch)
            answer = json.dumps(self.document).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         + f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer)
            await writer.drain()
        finally:
            writer.close()


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def section(url: str, **device: Any) -> dict[str, Any]:
    return {
        "type": "http_json", "edge_node_id": "salad-checkweigher",
        "devices": [{
            "device_id": "checkweigher", "url": url, "interval_s": 0.1, "timeout_s": 1.0,
            "points": [
                {"name": "weight_g", "pointer": "/last/weight_g", "datatype": "Double", "unit": "g"},
                {"name": "accepted", "pointer": "/counters/accepted", "datatype": "Int64"},
                {"name": "running", "pointer": "/state/running", "datatype": "Boolean"},
                {"name": "target_g", "pointer": "/setup/target_g", "datatype": "Double", "writable": True},
            ],
            **device,
        }],
    }  # fmt: skip


PATH = "uns/plant1/salad-checkweigher/checkweigher"


def device_diagnostics(hub: Hub) -> dict[str, Any]:
    return hub.diagnostics()["connectors"]["salad_checkweigher"]["connector"]["devices"]["checkweigher"]


async def test_installed_connector_polls_json_reports_bad_when_the_endpoint_is_down_and_recovers(
        broker, tmp_path, monkeypatch, caplog):
    install_example(tmp_path, monkeypatch)
    caplog.set_level(logging.INFO, logger="plantbus_http_json")
    endpoint = await JsonEndpoint({"last": {"weight_g": 251.5}, "counters": {"accepted": 10},
                                   "state": {"running": True}, "setup": {"target_g": 250.0}}).start()
    hub = Hub(config(tmp_path, broker.url, connectors={"salad_checkweigher": section(endpoint.url)}))
    status = hub.plugins.status["http_json"]  # found through its entry point, like any installed plugin
    assert (status.version, status.origin, status.state) == ("0.1.0", "distribution plantbus-http-json", "loaded")
    rec = Recorder(hub.host)
    async with running(hub):
        await rec.wait_value(f"{PATH}/weight_g", 251.5, timeout=10)
        await rec.wait_value(f"{PATH}/accepted", 10)
        await rec.wait_value(f"{PATH}/running", True)

        endpoint.document["counters"]["accepted"] = 11  # the device counts on: the next poll reports it
        await rec.wait_value(f"{PATH}/accepted", 11)

        await hub.host.write(f"{PATH}/target_g", 260.0)  # DCMD -> HTTP PATCH with a merge patch
        await wait_until(lambda: endpoint.patches, what="the PATCH to reach the endpoint")
        assert endpoint.patches == [{"setup": {"target_g": 260.0}}]
        await rec.wait_value(f"{PATH}/target_g", 260.0)

        del endpoint.document["last"]  # a pointer that finds nothing: that point alone goes BAD
        bad = await rec.wait_quality(f"{PATH}/weight_g", Quality.BAD)
        assert bad.value == 251.5 and rec.latest(f"{PATH}/accepted").quality is Quality.GOOD
        endpoint.document["last"] = {"weight_g": 249.0}
        await rec.wait_value(f"{PATH}/weight_g", 249.0)

        await endpoint.stop()  # the device is unreachable: all its values go BAD, keeping the last ones
        for name, last in (("weight_g", 249.0), ("accepted", 11), ("running", True)):
            assert (await rec.wait_quality(f"{PATH}/{name}", Quality.BAD)).value == last
        await wait_until(lambda: device_diagnostics(hub)["failures"] >= 3, what="several failed polls")
        assert device_diagnostics(hub)["failing"].startswith("URLError")

        await endpoint.start()  # back on the same port
        await rec.wait_value(f"{PATH}/weight_g", 249.0)
        assert hub.host.current("plant1/salad-checkweigher/checkweigher/weight_g").quality is Quality.GOOD
    await endpoint.stop()

    messages = [r.getMessage() for r in caplog.records if r.name == "plantbus_http_json"]
    down = [m for m in messages if "failed:" in m]
    assert len(down) == 1, messages  # logged once, however many polls failed
    assert sum("answers again" in m for m in messages) == 1, messages
    assert sum("nothing at /last/weight_g" in m for m in messages) == 1, messages


def test_the_generated_sample_configures_a_hub(tmp_path, monkeypatch):
    install_example(tmp_path, monkeypatch)
    import plantbus_http_json

    sections = yaml.safe_load(plantbus_http_json.sample_yaml())["connectors"]
    hub = Hub(config(tmp_path, connectors=sections))
    assert len(hub.connectors) == 1 and hub.connectors.status["salad_checkweigher"].type == "http_json"


def test_connector_settings_errors_name_the_field(tmp_path, monkeypatch):
    install_example(tmp_path, monkeypatch)
    bad = section("ftp://checkweigher/status", colour="red")
    bad["devices"][0]["points"][1]["pointer"] = "counters/accepted"
    bad["devices"][0]["points"][2]["datatype"] = "DataSet"
    with pytest.raises(ConfigError) as info:
        Hub(config(tmp_path, connectors={"salad_checkweigher": bad}))
    text = str(info.value)
    assert "connectors.salad_checkweigher.devices[0].url:" in text and "http://" in text
    assert "connectors.salad_checkweigher.devices[0].colour: unknown key" in text
    assert "connectors.salad_checkweigher.devices[0].points[1].pointer:" in text
    assert "connectors.salad_checkweigher.devices[0].points[2].datatype:" in text
