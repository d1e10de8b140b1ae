"""A small real OPC UA server for the connector tests: `python tests/opcua_test_server.py PORT [--tick S]`.

It builds an `Oatbar` object with a few variables of different types (string NodeIds `ns=2;s=Filler.*`, the
same on every start so a restarted server is the same server to a client), changes `Filler.Count` every
tick, and prints READY once it listens. Run in a subprocess so a test can kill it and start it again.

For the deadband and credential tests it also has:
- `Tank.Level` (Double, writable) with an `EURange` property 0..200, and `Tank.Pressure` (Double, writable)
  without one: percent deadbands need the EURange (OPC UA Part 8, 6.2).
- `Test.MonitoredFilters`: JSON of the data-change filter of every monitored item the server holds, refreshed
  every tick, so a test sees what the server received rather than what the client meant to send.
- `--percent-deadband`: `ignore` is asyncua 2.1 as it is (it accepts a PercentDeadband filter, logs "DeadbandType
  Percent is not implemented" and reports every change); `spec` adds Part 8 6.2: the change must exceed
  value% of (high - low) of the EURange, and a node without EURange is refused with Bad_DeadbandFilterInvalid;
  `unsupported` refuses every percent filter with Bad_MonitoredItemFilterUnsupported, as servers without
  percent deadbands do.
- `--user NAME:PASSWORD`: only that user may log in (no anonymous sessions); `Test.LoginAttempts` counts the
  identities the server checked, so a test can see how often a client tried.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues
from cryptography.x509.oid import ExtendedKeyUsageOID

NAMESPACE = "urn:plantbus:test:oatbar"


class OneUser:
    """asyncua user manager: exactly one username and password; counts every identity it is asked to check."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.attempts = 0

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:  # fmt: skip
        self.attempts += 1
        if username == self.username and password == self.password:
            return User(role=UserRole.User)
        return None  # asyncua answers BadUserAccessDenied


def percent_deadband(mode: str, eu_ranges: dict[ua.NodeId, tuple[float, float]]) -> None:
    """Give this process's asyncua server percent deadbands per Part 8 6.2 (`spec`) or refuse them (`unsupported`)."""
    create = MonitoredItemService._create_data_change_monitored_item
    exceeded = MonitoredItemService._is_deadband_exceeded

    async def create_item(self: MonitoredItemService, params: ua.MonitoredItemCreateRequest) -> Any:
        flt = params.RequestedParameters.Filter
        if getattr(flt, "DeadbandType", None) == ua.DeadbandType.Percent:
            refuse = None
            if mode == "unsupported":
                refuse = ua.StatusCodes.BadMonitoredItemFilterUnsupported
            elif params.ItemToMonitor.NodeId not in eu_ranges or not 0 <= flt.DeadbandValue <= 100:
                refuse = ua.StatusCodes.BadDeadbandFilterInvalid
            if refuse is not None:
                result = ua.MonitoredItemCreateResult()
                result.StatusCode = ua.StatusCode(refuse)
                return result
        return await create(self, params)

    def is_exceeded(self: MonitoredItemService, values: MonitoredItemValues, flt: ua.DataChangeFilter) -> bool:
        if flt.DeadbandType != ua.DeadbandType.Percent:
            return exceeded(self, values, flt)
        cur, old = values.get_current_datavalue(), values.get_old_datavalue()
        if old is None or cur is None or cur.Value is None or old.Value is None:
            return True
        item = next(m for m in self._monitored_items.values() if m.mvalue is values)
        low, high = eu_ranges[item.read_value_id.NodeId]
        # Compared with the previous sample, as asyncua does for absolute deadbands.
        return abs(cur.Value.Value - old.Value.Value) > flt.DeadbandValue / 100.0 * (high - low)

    MonitoredItemService._create_data_change_monitored_item = create_item  # type: ignore[method-assign]
    MonitoredItemService._is_deadband_exceeded = is_exceeded  # type: ignore[method-assign]


def monitored_filters(server: Server) -> str:
    """JSON of every data-change monitored item the server holds: node, deadband type and value, trigger."""
    items = []
    for sub in server.iserver.subscription_service.subscriptions.values():
        for mdata in sub.monitored_item_srv._monitored_items.values():
            # By its fields: the decoded filter's class is not always the `ua.DataChangeFilter` imported here.
            flt = mdata.filter if hasattr(mdata.filter, "DeadbandType") else None
            if mdata.read_value_id is None or mdata.read_value_id.AttributeId != ua.AttributeIds.Value:
                continue
            items.append({
                "node": mdata.read_value_id.NodeId.to_string(),
                "deadband_type": int(flt.DeadbandType) if flt is not None else None,
                "deadband_value": flt.DeadbandValue if flt is not None else None,
                "trigger": int(flt.Trigger) if flt is not None else None,
            })  # fmt: skip
    return json.dumps(sorted(items, key=lambda i: i["node"]))


async def serve(
    port: int, tick: float, max_subscriptions: int | None = None, secure: Path | None = None, variables: int = 0,
    *, user: str | None = None, percent: str = "ignore",
) -> None:  # fmt: skip
    """Build the address space, listen on `port` and bump Filler.Count every `tick` seconds, forever.

    `variables` adds Double nodes Filler.V0..V<n-1> that all change every tick (load for the benchmark);
    `user` (NAME:PASSWORD) and `percent` are described in the module docstring.
    """
    users = OneUser(*user.split(":", 1)) if user else None
    server = Server(user_manager=users)
    await server.init()
    if users is not None:
        server.set_identity_tokens([ua.UserNameIdentityToken])  # no anonymous sessions
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plantbus/")
    server.set_server_name("Plantbus test PLC")
    if secure is None:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    else:
        # Only Basic256Sha256 SignAndEncrypt: a client with the wrong security settings is refused.
        await make_certificate(secure / "server-key.pem", secure / "server-cert.der", "urn:plantbus:test:server")
        await server.load_certificate(str(secure / "server-cert.der"))
        await server.load_private_key(str(secure / "server-key.pem"))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    if max_subscriptions is not None:
        server.iserver.max_subscriptions = max_subscriptions  # 0: a server that refuses subscriptions
    ns = await server.register_namespace(NAMESPACE)  # 2: the first namespace after the standard ones
    line = await server.nodes.objects.add_object(ua.NodeId("Oatbar", ns), ua.QualifiedName("Oatbar", ns))
    filler = await line.add_object(ua.NodeId("Filler", ns), ua.QualifiedName("Filler", ns))

    async def var(name: str, value: object, vtype: ua.VariantType, *, writable: bool = False):  # type: ignore[no-untyped-def]
        node = await filler.add_variable(
            ua.NodeId(f"Filler.{name}", ns), ua.QualifiedName(name, ns), ua.Variant(value, vtype)
        )
        if writable:
            await node.set_writable()
        return node

    count = await var("Count", 0, ua.VariantType.Int32)
    await var("Speed", 120.5, ua.VariantType.Double, writable=True)
    await var("Running", True, ua.VariantType.Boolean, writable=True)
    await var("Recipe", "OB-40", ua.VariantType.String, writable=True)
    await var("Temperature", 21.5, ua.VariantType.Float)
    await var("Rejects", 3, ua.VariantType.UInt16, writable=True)
    await var("Weight", 40.0, ua.VariantType.Double, writable=True)
    load = [await var(f"V{i}", 0.0, ua.VariantType.Double) for i in range(variables)]

    tank = await line.add_object(ua.NodeId("Tank", ns), ua.QualifiedName("Tank", ns))
    level = await tank.add_variable(ua.NodeId("Tank.Level", ns), ua.QualifiedName("Level", ns), 50.0)
    await level.set_writable()
    await level.add_property(
        ua.NodeId("Tank.Level.EURange", ns), ua.QualifiedName("EURange", 0), ua.Range(0.0, 200.0),
        datatype=ua.ObjectIds.Range,
    )  # fmt: skip
    pressure = await tank.add_variable(ua.NodeId("Tank.Pressure", ns), ua.QualifiedName("Pressure", ns), 2.0)
    await pressure.set_writable()
    if percent != "ignore":
        percent_deadband(percent, {level.nodeid: (0.0, 200.0)})
    test = await server.nodes.objects.add_object(ua.NodeId("Test", ns), ua.QualifiedName("Test", ns))
    filters = await test.add_variable(
        ua.NodeId("Test.MonitoredFilters", ns), ua.QualifiedName("MonitoredFilters", ns), "[]"
    )
    attempts = await test.add_variable(
        ua.NodeId("Test.LoginAttempts", ns), ua.QualifiedName("LoginAttempts", ns), ua.Variant(0, ua.VariantType.UInt32)
    )

    async with server:
        print("READY", flush=True)
        n = 0
        while True:
            await asyncio.sleep(tick)
            n += 1
            await count.write_value(ua.Variant(n, ua.VariantType.Int32))
            for i, node in enumerate(load):
                await node.write_value(ua.Variant(n + i * 0.001, ua.VariantType.Double))
            await filters.write_value(monitored_filters(server))
            if users is not None:
                await attempts.write_value(ua.Variant(users.attempts, ua.VariantType.UInt32))


async def make_certificate(key: Path, cert: Path, app_uri: str) -> None:
    """A self-signed application certificate (DER) and key (PEM) for client or server."""
    await setup_self_signed_certificate(
        key, cert, app_uri, "127.0.0.1",
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH], {"organizationName": "Plantbus tests"},
    )  # fmt: skip


def main() -> None:
    """Parse the command line and serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--tick", type=float, default=0.2)
    parser.add_argument("--max-subscriptions", type=int, default=None)
    parser.add_argument("--secure", type=Path, default=None, help="folder for the server certificate")
    parser.add_argument("--variables", type=int, default=0, help="extra Double nodes changing every tick")
    parser.add_argument("--user", default=None, help="NAME:PASSWORD, the only identity allowed (no anonymous)")
    parser.add_argument("--percent-deadband", choices=("ignore", "spec", "unsupported"), default="ignore")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args.port, args.tick, args.max_subscriptions, args.secure, args.variables,
                      user=args.user, percent=args.percent_deadband))  # fmt: skip


if __name__ == "__main__":
    main()
