"""Plantbus plugin: registers the `opcua` connector type and the `plantbus opcua browse` command."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from connectors.base import ConnectorType
from connectors.opcua.config import OpcUaSettings
from hub.errors import PlantbusError
from hub.plugins import hookimpl


def _create(name: str, settings: OpcUaSettings, context: Any) -> Any:
    # asyncua is imported only by hubs that run an OPC UA connector, not by every `plantbus` command.
    from connectors.opcua.connector import create

    return create(name, settings, context)


@hookimpl
def register_connectors(register: Any) -> None:
    """Offer the `opcua` connector type."""
    register("opcua", ConnectorType(settings=OpcUaSettings, create=_create))


@hookimpl
def register_commands(cli: Any) -> None:
    """Add `plantbus opcua browse URL`."""

    @cli.group("opcua")
    def opcua() -> None:
        """OPC UA connector tools."""

    @opcua.command("browse")
    @click.argument("url")
    @click.option("--depth", default=3, show_default=True, help="levels below the start node")
    @click.option("--node", "start", default=None, help="start node id, e.g. ns=2;s=Oatbar (default: Objects)")
    @click.option("--timeout", default=5.0, show_default=True, help="seconds per request")
    def browse_command(url: str, depth: int, start: str | None, timeout: float) -> None:
        """Print the address space: browse name, NodeId, node class, data type and access level."""
        from connectors.opcua.browse import browse

        try:
            nodes = asyncio.run(browse(url, start, depth, timeout))
        except PlantbusError as exc:
            raise click.ClickException(str(exc)) from None
        for node in nodes:
            click.echo(node.line())
