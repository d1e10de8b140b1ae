"""Registers the modbus connector type with the hub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.base import ConnectorType
from connectors.modbus.config import ModbusSettings
from connectors.modbus.connector import ModbusConnector
from hub.plugins import hookimpl


@hookimpl
def register_connectors(register: Callable[[str, Any], None]) -> None:
    """Offer the `modbus` connector type (Modbus TCP and RTU)."""
    register("modbus", ConnectorType(settings=ModbusSettings, create=ModbusConnector))
