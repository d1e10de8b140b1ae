"""Settings of an OPC UA connector section (`connectors.<name>` with `type: opcua`), validated at load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import ConnectorSettings
from hub.errors import ConfigError
from hub.sparkplug.payload import DataType


class Deadband(BaseModel):
    """An OPC UA data-change filter: report a change only beyond `value` (absolute units or percent of EURange)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["absolute", "percent"] = "absolute"
    value: float = Field(ge=0, description="absolute: engineering units; percent: 0-100 of the node's EURange")

    @model_validator(mode="after")
    def _percent_range(self) -> Deadband:
        if self.type == "percent" and self.value > 100:
            raise ValueError(f"a percent deadband is 0-100, got {self.value}")
        return self


class Security(BaseModel):
    """How the secure channel is protected; Basic256Sha256 needs a client certificate and key the server trusts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = Field(None, description="client certificate (DER or PEM)")
    private_key: Path | None = Field(None, description="client private key (PEM)")
    server_certificate: Path | None = Field(None, description="pin the server certificate (optional)")

    @model_validator(mode="after")
    def _consistent(self) -> Security:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(
                f"policy {self.policy} with mode {self.mode}: use policy None with mode None, or "
                "policy Basic256Sha256 with mode Sign or SignAndEncrypt"
            )
        if self.policy != "None":
            if self.certificate is None or self.private_key is None:
                raise ValueError(f"policy {self.policy} needs certificate and private_key (client certificate files)")
            for label, path in (("certificate", self.certificate), ("private_key", self.private_key)):
                if not path.is_file():
                    raise ValueError(f"{label} {path} does not exist; give the path of the client's {label} file")
        return self


class Tag(BaseModel):
    """One OPC UA variable published as a Sparkplug metric; give node_id or browse_path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Sparkplug metric name, e.g. count or speed_setpoint")
    node_id: str | None = Field(None, description="NodeId string, e.g. ns=2;s=Filler.Count or ns=3;i=1001")
    browse_path: str | None = Field(
        None, description="path from the Objects folder, e.g. 2:Oatbar/2:Filler/2:Count (resolved at connect)"
    )
    datatype: str | None = Field(
        None, description="Sparkplug datatype when the server cannot be asked at start (else read from the node)"
    )
    writable: bool = Field(False, description="accept DCMD writes (the node must also be writable on the server)")
    sampling_interval_ms: float | None = Field(None, ge=0, description="overrides the device's interval")
    deadband: Deadband | None = Field(None, description="overrides the device's deadband")

    @model_validator(mode="after")
    def _one_address(self) -> Tag:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError(f"tag {self.name!r}: give exactly one of node_id or browse_path")
        if self.node_id is not None:
            from asyncua import ua

            try:
                ua.NodeId.from_string(self.node_id)
            except Exception:
                raise ValueError(
                    f"tag {self.name!r}: node_id {self.node_id!r} is not a NodeId; write it like ns=2;s=Filler.Count "
                    "or ns=2;i=1001 (`plantbus opcua browse URL` lists them)"
                ) from None
        if self.datatype is not None:
            try:
                DataType.parse(self.datatype)
            except Exception:
                raise ValueError(f"tag {self.name!r}: unknown Sparkplug datatype {self.datatype!r}") from None
        return self


class Device(BaseModel):
    """A group of tags published as one Sparkplug device (one per machine), with shared sampling settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(min_length=1, description="Sparkplug device id, e.g. filler")
    sampling_interval_ms: float = Field(250, ge=0, description="how often the server samples each node")
    deadband: Deadband | None = None
    poll_interval_ms: float = Field(1000, gt=0, description="read period in poll mode")
    tags: list[Tag] = Field(min_length=1)

    @field_validator("tags")
    @classmethod
    def _unique(cls, tags: list[Tag]) -> list[Tag]:
        seen: set[str] = set()
        for tag in tags:
            if tag.name.lower() in seen:
                raise ValueError(f"tag name {tag.name!r} appears twice (names are compared ignoring case)")
            seen.add(tag.name.lower())
        return tags


class OpcUaSettings(ConnectorSettings):
    """An OPC UA server read by subscriptions (or polls) and published as a Sparkplug edge node."""

    type: Literal["opcua"] = "opcua"
    endpoint: str = Field(description="opc.tcp://host:port/path of the server")
    security: Security = Security()
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password (never the YAML)")
    mode: Literal["subscribe", "poll"] = Field(
        "subscribe", description="subscribe (monitored items); falls back to poll if the server refuses"
    )
    publishing_interval_ms: float = Field(500, gt=0, description="subscription publishing interval")
    request_timeout_s: float = Field(4.0, gt=0)
    watchdog_interval_s: float = Field(1.0, gt=0, description="how often the session is probed")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    devices: list[Device] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme != "opc.tcp" or not parsed.hostname:
            raise ValueError(f"endpoint {value!r} is not an OPC UA URL; write it like opc.tcp://10.0.0.5:4840")
        try:
            parsed.port
        except ValueError:
            raise ValueError(f"endpoint {value!r} has a bad port; write it like opc.tcp://10.0.0.5:4840") from None
        if parsed.password:
            raise ValueError("do not put a password in the endpoint URL; set password_env instead")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> OpcUaSettings:
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env is set but username is not")
        ids: set[str] = set()
        for device in self.devices:
            if device.device_id in ids:
                raise ValueError(f"device_id {device.device_id!r} appears twice")
            ids.add(device.device_id)
        return self

    def password(self) -> str | None:
        """The password from the environment variable `password_env`; ConfigError when it is not set."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(
                f"OPC UA connector {self.edge_node_id}: environment variable {self.password_env} is not set; "
                "export it with the OPC UA user's password"
            )
        return value


def sample_settings() -> OpcUaSettings:
    """The documented example: the oat-bar line's PLC (PLANT.md), one device per machine."""
    return OpcUaSettings.model_validate({
        "type": "opcua", "group_id": "plant1", "edge_node_id": "oatbar-plc",
        "endpoint": "opc.tcp://10.0.0.5:4840",
        "username": "plantbus", "password_env": "OATBAR_OPCUA_PASSWORD",
        "devices": [
            {"device_id": "filler", "sampling_interval_ms": 250,
             "deadband": {"type": "absolute", "value": 0.5},
             "tags": [
                 {"name": "count", "node_id": "ns=2;s=Filler.Count"},
                 {"name": "speed", "node_id": "ns=2;s=Filler.Speed", "writable": True},
                 {"name": "running", "browse_path": "2:Oatbar/2:Filler/2:Running"},
                 {"name": "temperature", "node_id": "ns=2;s=Filler.Temperature", "sampling_interval_ms": 1000,
                  "deadband": {"type": "percent", "value": 1.0}},
             ]},
            {"device_id": "checkweigher", "tags": [
                {"name": "weight", "node_id": "ns=2;s=Checkweigher.Weight", "datatype": "Double"},
            ]},
        ],
    })  # fmt: skip


def sample_yaml() -> str:
    """connectors/opcua/sample.yaml, generated from the model (a test keeps the committed file equal)."""
    import yaml

    body = sample_settings().model_dump(mode="json", exclude_none=True)
    header = (
        "# OPC UA connector: a section under `connectors:` in the hub's YAML (generated from\n"
        "# connectors/opcua/config.py by `python -m connectors.opcua.config`; do not edit by hand).\n"
    )
    return header + yaml.safe_dump({"connectors": {"oatbar_plc": body}}, sort_keys=False)


if __name__ == "__main__":
    print(sample_yaml(), end="")
