"""A small real OPC UA server for the connector tests: `python tests/opcua_test_server.py PORT [--tick S]`.

It builds an `Oatbar` object with a few variables of different types (string NodeIds `ns=2;s=Filler.*`, the
same on every start so a restarted server is the same server to a client), changes `Filler.Count` every
tick, and prints READY once it listens. Run in a subprocess so a test can kill it and start it again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

NAMESPACE = "urn:plantbus:test:oatbar"


async def serve(
    port: int, tick: float, max_subscriptions: int | None = None, secure: Path | None = None, variables: int = 0
) -> None:
    """Build the address space, listen on `port` and bump Filler.Count every `tick` seconds, forever.

    `variables` adds Double nodes Filler.V0..V<n-1> that all change every tick (load for the benchmark).
    """
    server = Server()
    await server.init()
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

    async with server:
        print("READY", flush=True)
        n = 0
        while True:
            await asyncio.sleep(tick)
            n += 1
            await count.write_value(ua.Variant(n, ua.VariantType.Int32))
            for i, node in enumerate(load):
                await node.write_value(ua.Variant(n + i * 0.001, ua.VariantType.Double))


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args.port, args.tick, args.max_subscriptions, args.secure, args.variables))


if __name__ == "__main__":
    main()
