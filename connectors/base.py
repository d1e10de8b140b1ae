"""The connector contract: what an equipment connector plugin registers and what the hub runs.

A connector type is registered through the `register_connectors` hook as
`register("modbus", ConnectorType(settings=ModbusSettings, create=ModbusConnector))`. A plant configures
instances under `connectors.<name>` in the hub's YAML; the hub validates each section with the type's
settings model (errors name `connectors.<name>.<field>`), builds the connector with
`create(name, settings, context)` and runs `connector.run()` as a task named `plantbus[connector:<name>]`,
restarting it with backoff if it ever raises. A connector is a Sparkplug edge node (hub/sparkplug/edge.py):
it never writes to the historian or the mirror itself; its values reach them through the broker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from hub.mqtt import BrokerUrl


class ConnectorSettings(BaseModel):
    """Fields every connector section has; a connector type's model extends it (extra="forbid")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="the registered connector type, e.g. opcua or modbus")
    enabled: bool = True
    group_id: str = Field("plant1", description="Sparkplug group the edge node publishes in")
    edge_node_id: str = Field(description="Sparkplug edge node id, unique in the group (e.g. oatbar-plc)")


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What the hub gives a connector: where the broker is, whom to wait for, where to keep state."""

    broker: BrokerUrl
    primary_host_id: str | None
    state_dir: Path


class Connector(Protocol):
    """A running connector: `run()` until cancelled (publishing NDEATH on the way out), `diagnostics()` any time."""

    async def run(self) -> None: ...

    def diagnostics(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ConnectorType:
    """What a plugin registers: the settings model and how to build a connector from validated settings."""

    settings: type[ConnectorSettings]
    create: Callable[[str, Any, ConnectorContext], Connector]
