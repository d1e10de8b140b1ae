"""OPC UA server (asyncua) exposing the simulated oatbar line exactly as connectors/sim/layout.py documents."""

from __future__ import annotations

import logging
from typing import Any

from asyncua import Server, ua

from connectors.sim.layout import OPCUA_ENDPOINT_PATH, OPCUA_NAMESPACE, OPCUA_TAGS, OpcUaTag

log = logging.getLogger(__name__)


def _variant(tag: OpcUaTag, value: Any) -> ua.Variant:
    vtype = getattr(ua.VariantType, tag.variant)
    if tag.variant in ("Int32", "UInt32"):
        value = int(value)
    elif tag.variant == "Double":
        value = float(value)
    elif tag.variant == "Boolean":
        value = bool(value)
    else:
        value = str(value)
    return ua.Variant(value, vtype)


class OatbarOpcUaServer:
    """The oatbar line's PLC as an OPC UA server: publish(snapshot) updates nodes, take_writes() returns client writes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4840) -> None:
        self.host = host
        self.port = port
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._published: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        """Endpoint URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}{OPCUA_ENDPOINT_PATH}"

    async def start(self, initial: dict[str, Any]) -> None:
        """Build the address space from the layout with `initial` values and start listening."""
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("zdorovo plant1 oatbar PLC (simulated)")
        # The simulator is a loopback test fixture: no certificates, so startup takes no key generation.
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(OPCUA_NAMESPACE)
        folders: dict[str, Any] = {}
        for tag in OPCUA_TAGS:
            parent = server.nodes.objects
            for depth, name in enumerate(tag.browse_path[:-1], start=1):
                key = "/".join(tag.browse_path[:depth])
                if key not in folders:
                    folders[key] = await parent.add_object(ua.NodeId(key.replace("/", "."), idx), ua.QualifiedName(name, idx))
                parent = folders[key]
            node = await parent.add_variable(
                ua.NodeId(tag.node_id, idx), ua.QualifiedName(tag.browse_path[-1], idx), _variant(tag, initial[tag.path])
            )
            if tag.writable:
                await node.set_writable()
            self._nodes[tag.path] = node.nodeid
            self._published[tag.path] = _variant(tag, initial[tag.path]).Value
        await server.start()
        self._server = server
        log.info("simulated oatbar OPC UA server listening at %s", self.endpoint)

    def take_writes(self) -> dict[str, Any]:
        """Values clients wrote to writable nodes since the last publish, by model path."""
        assert self._server is not None, "start() the server first"
        writes: dict[str, Any] = {}
        for tag in OPCUA_TAGS:
            if not tag.writable:
                continue
            # Synchronous read: no client write can slip in between this read and the publish that follows.
            current = self._server.read_attribute_value(self._nodes[tag.path]).Value.Value
            if current != self._published[tag.path]:
                writes[tag.path] = current
                # Forget what was published so the next publish writes back the value the model kept (it may clamp).
                self._published[tag.path] = None
        return writes

    async def publish(self, snapshot: dict[str, Any]) -> None:
        """Write every changed value of the snapshot to its node (subscribers see data changes)."""
        assert self._server is not None, "start() the server first"
        for tag in OPCUA_TAGS:
            variant = _variant(tag, snapshot[tag.path])
            if self._published.get(tag.path) == variant.Value:
                continue
            self._published[tag.path] = variant.Value
            await self._server.write_attribute_value(self._nodes[tag.path], ua.DataValue(variant))

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            await self._server.stop()
            self._server = None
