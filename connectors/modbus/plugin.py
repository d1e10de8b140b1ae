"""Registers the modbus connector type with the hub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.base import ConnectorType
from connectors.modbus.config import ModbusSettings
from hub.plugins import hookimpl


def _create(name: str, settings: ModbusSettings, context: Any) -> Any:
    # pymodbus is imported only by hubs that run a Modbus connector, not by every `plantbus` command.
    from connectors.modbus.connector import ModbusConnector

    return ModbusConnector(name, settings, context)


@hookimpl
def register_connectors(register: Callable[[str, Any], None]) -> None:
    """Offer the `modbus` connector type (Modbus TCP and RTU)."""
    register("modbus", ConnectorType(settings=ModbusSettings, create=_create))
