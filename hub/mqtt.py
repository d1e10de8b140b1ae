"""Broker addresses and MQTT client construction shared by the host, edge nodes and tools."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

from hub.errors import ConfigError

_SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True), "ssl": (8883, True)}


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """`mqtt://user:password@host:port` (or mqtts:// for TLS)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        if "://" not in url:
            url = "mqtt://" + url
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(f"broker URL {url!r}: scheme must be one of {', '.join(_SCHEMES)}")
        default_port, tls = _SCHEMES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError:
            raise ConfigError(f"broker URL {url!r}: the port must be a number 1-65535") from None
        if not parts.hostname:
            raise ConfigError(f"broker URL {url!r} names no host; write e.g. mqtt://127.0.0.1:1883")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def make_client(
    broker: BrokerUrl,
    client_id: str,
    *,
    will: aiomqtt.Will | None = None,
    clean_session: bool = True,
    keepalive: int = 30,
    max_queued_outgoing: int | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client for MQTT 3.1.1 with Sparkplug's session settings."""
    tls_context = ssl.create_default_context() if broker.tls else None
    return aiomqtt.Client(
        hostname=broker.host,
        port=broker.port,
        username=broker.username,
        password=broker.password,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=clean_session,
        keepalive=keepalive,
        will=will,
        tls_context=tls_context,
        max_queued_outgoing_messages=max_queued_outgoing,
        timeout=10,
        # Nagle would hold back the second and later messages of a burst until the broker's delayed
        # ACK (~40 ms on Linux); Sparkplug traffic is bursts of small messages.
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
    )
