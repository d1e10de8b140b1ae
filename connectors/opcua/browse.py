"""Walk an OPC UA server's address space for `plantbus opcua browse`, so an engineer can pick tags."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from asyncua import Client, Node, ua

from hub.errors import ConfigError, PlantbusError

_ACCESS = ((0x01, "read"), (0x02, "write"), (0x04, "history"))


@dataclass(frozen=True, slots=True)
class BrowsedNode:
    """One node found while browsing: what a tag configuration needs to know about it."""

    depth: int
    browse_name: str  # "ns:Name", the form browse_path uses
    node_id: str
    node_class: str
    data_type: str | None
    access: str | None

    def line(self) -> str:
        """The node as one indented line of the listing."""
        extra = f"  {self.data_type}  [{self.access}]" if self.node_class == "Variable" else ""
        return f"{'  ' * self.depth}{self.browse_name}  {self.node_id}  {self.node_class}{extra}"


async def _describe(client: Client, node: Node, depth: int, name: str, node_class: ua.NodeClass) -> BrowsedNode:
    data_type = access = None
    if node_class == ua.NodeClass.Variable:
        dtype = (await node.read_attribute(ua.AttributeIds.DataType)).Value.Value
        try:
            data_type = (await client.get_node(dtype).read_browse_name()).Name
        except ua.UaError:
            data_type = str(dtype)
        level = (await node.read_attribute(ua.AttributeIds.UserAccessLevel)).Value.Value or 0
        access = ",".join(label for bit, label in _ACCESS if level & bit) or "none"
    return BrowsedNode(depth, name, node.nodeid.to_string(), node_class.name, data_type, access)


async def browse(url: str, start: str | None = None, depth: int = 3, timeout: float = 5.0) -> list[BrowsedNode]:
    """Connect to `url` and list the nodes under `start` (default: the Objects folder) down to `depth` levels."""
    client = Client(url, timeout=timeout)
    try:
        await asyncio.wait_for(client.connect(), timeout * 2)
    except (OSError, TimeoutError, ua.UaError) as exc:
        raise PlantbusError(f"cannot connect to OPC UA server {url} ({exc!r}): check the URL and that it is on") from None
    try:
        root = client.nodes.objects if start is None else client.get_node(start)
        try:
            name = await root.read_browse_name()
            node_class = await root.read_node_class()
        except ua.UaError as exc:
            raise ConfigError(f"node {start} is not on the server ({exc}); browse without --node first") from None
        out = [await _describe(client, root, 0, name.to_string(), node_class)]

        async def walk(node: Node, level: int) -> None:
            if level > depth:
                return
            refs = await node.get_references(
                refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward, includesubtypes=True
            )
            for ref in refs:
                child = client.get_node(ref.NodeId)
                out.append(await _describe(client, child, level, ref.BrowseName.to_string(), ref.NodeClass))
                if ref.NodeClass in (ua.NodeClass.Object, ua.NodeClass.Variable) and not _is_standard(ref.NodeId):
                    await walk(child, level + 1)

        await walk(root, 1)
        return out
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 2)
        except Exception:  # noqa: BLE001 - the listing is done; a failed goodbye changes nothing
            pass


def _is_standard(node_id: ua.NodeId) -> bool:
    # The Server object and its children are namespace 0 and huge; list them, do not descend.
    return node_id.NamespaceIndex == 0
