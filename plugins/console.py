"""Built-in plugin: the `plantbus console` command, which serves the NiceGUI operator console (ui/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hub.plugins import hookimpl


@click.command("console")
@click.option("--broker", default=None, help="mqtt://user:pass@host:port; default: broker.url of the configuration")
@click.option("--host", default="127.0.0.1", show_default=True, help="address the web server listens on")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--historian-url", default=None,
              help="SQL historian for trends (sqlite:///var/historian.sqlite or postgresql+psycopg://...)")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML configuration (UNS prefix, mappings, status topic, broker)")
@click.option("--with-hub", is_flag=True, help="also run the hub from --config in this process (enables writes)")
@click.option("--allow-writes", is_flag=True, help="with --with-hub: let operators write to writable tags")
def console_command(broker: str | None, host: str, port: int, historian_url: str | None, config_file: Path | None,
                    with_hub: bool, allow_writes: bool) -> None:
    """Serve the operator console (UNS browser, plant overview) from a subscription to the broker."""
    from hub.config import load_config
    from hub.errors import PlantbusError
    from hub.mqtt import BrokerUrl
    from ui.app import Console, ConsoleSettings, serve

    try:
        cfg = load_config(config_file)
        url = BrokerUrl.parse(broker) if broker else cfg.broker.resolve()
        hub_obj = None
        if with_hub:
            from hub.app import Hub

            hub_obj = Hub(cfg, broker_override=broker)
        elif allow_writes:
            raise click.UsageError("--allow-writes needs --with-hub: a standalone console is read-only")
    except PlantbusError as exc:
        raise click.ClickException(str(exc)) from exc
    from plugins.cv_events import snapshot_dir_for

    settings = ConsoleSettings(broker=url, uns=cfg.uns, historian_url=historian_url, allow_writes=allow_writes,
                               snapshot_dir=snapshot_dir_for(cfg))
    click.echo(f"plantbus console on http://{host}:{port} reading the UNS from {url}", err=True)
    serve(Console(settings, hub=hub_obj), host=host, port=port)


@hookimpl
def register_commands(cli: Any) -> None:
    """Add `plantbus console`."""
    cli.add_command(console_command)
