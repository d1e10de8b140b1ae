"""The broker Plantbus ships (Mosquitto with mosquitto/dev.conf) is a Sparkplug-compliant MQTT server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from hub.broker import LocalMosquitto
from hub.mqtt import BrokerUrl, make_client

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shipped_broker(tmp_path):
    with LocalMosquitto(workdir=tmp_path / "mq", base_conf=ROOT / "mosquitto/dev.conf") as b:
        yield b


async def _one(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            return message
    raise AssertionError("no message")


@pytest.mark.spec("tck-id-conformance-mqtt-qos0", "tck-id-conformance-mqtt-qos1")
@pytest.mark.parametrize("qos", [0, 1])
async def test_publish_and_subscribe_at_qos(shipped_broker, qos):
    url = BrokerUrl.parse(shipped_broker.url)
    async with make_client(url, f"sub-{qos}") as sub, make_client(url, f"pub-{qos}") as pub:
        await sub.subscribe("spBv1.0/g/NDATA/e", qos=qos)
        await pub.publish("spBv1.0/g/NDATA/e", b"x", qos=qos)
        message = await _one(sub)
        assert message.payload == b"x" and message.qos == qos


@pytest.mark.spec("tck-id-conformance-mqtt-retained")
async def test_retained_messages_reach_late_subscribers_and_an_empty_publish_clears_them(shipped_broker):
    url = BrokerUrl.parse(shipped_broker.url)
    async with make_client(url, "pub") as pub:
        await pub.publish("spBv1.0/STATE/h", b'{"online":true,"timestamp":1}', qos=1, retain=True)
    async with make_client(url, "late") as late:
        await late.subscribe("spBv1.0/STATE/h", qos=1)
        message = await _one(late)
        assert message.retain and message.payload == b'{"online":true,"timestamp":1}'
    async with make_client(url, "pub2") as pub:
        await pub.publish("spBv1.0/STATE/h", b"", qos=1, retain=True)
    async with make_client(url, "later") as later:
        await later.subscribe("spBv1.0/STATE/h", qos=1)
        with pytest.raises(TimeoutError):
            await _one(later, timeout=0.5)


@pytest.mark.spec("tck-id-conformance-mqtt-will-messages")
async def test_will_is_delivered_retained_at_qos1_when_a_client_dies(shipped_broker):
    url = BrokerUrl.parse(shipped_broker.url)
    will = '{"online":false,"timestamp":2}'
    async with make_client(url, "watcher") as watcher:
        await watcher.subscribe("spBv1.0/STATE/dying", qos=1)
        dying = subprocess.Popen(
            ["mosquitto_sub", "-p", str(shipped_broker.port), "-i", "dying", "-t", "unused", "--will-topic",
             "spBv1.0/STATE/dying", "--will-payload", will, "--will-qos", "1", "--will-retain"],
        )
        await asyncio.sleep(0.5)  # connected; then it dies without a DISCONNECT packet
        dying.send_signal(signal.SIGKILL)
        dying.wait(5)
        message = await _one(watcher, timeout=10)
        assert message.payload == will.encode() and message.qos == 1
    async with make_client(url, "late") as late:
        await late.subscribe("spBv1.0/STATE/dying", qos=1)
        assert (await _one(late)).retain
