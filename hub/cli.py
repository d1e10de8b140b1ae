"""The `plantbus` command line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path

import click
import yaml

from hub.config import PlantbusConfig, load_config
from hub.db import db
from hub.errors import ConfigError, PlantbusError
from hub.mqtt import BrokerUrl


# Libraries that log every protocol exchange at INFO (asyncua: each subscription publish); at the hub's INFO they
# would drown its own messages, so they speak from WARNING unless DEBUG is asked for.
CHATTY_LIBRARIES = ("asyncua", "pymodbus")


def _setup_logging(level: str) -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    if numeric > logging.DEBUG:
        for name in CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


async def _until_signalled(coro) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await coro


def _run_async(coro) -> None:  # type: ignore[no-untyped-def]
    """Run until done or Ctrl-C / SIGTERM, letting the coroutine's cleanup (NDEATH, STATE offline) run."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_until_signalled(coro))


def _fail(exc: PlantbusError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.group()
@click.version_option(package_name="plantbus")
def main() -> None:
    """Plantbus: the unified namespace of a food factory."""


@main.command()
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML configuration")
@click.option("--broker", help="mqtt://user:pass@host:port; overrides broker.url of the file")
def run(config_file: Path | None, broker: str | None) -> None:
    """Run the hub: Sparkplug primary host and unified-namespace mirror."""
    try:
        config = load_config(config_file)
        if broker:
            BrokerUrl.parse(broker)
        _setup_logging(config.log_level)
        from hub.app import Hub

        hub = Hub(config, broker_override=broker)
    except PlantbusError as exc:
        _fail(exc)
        return
    _run_async(hub.run())


@main.group()
def config() -> None:
    """Check or print configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE; print every problem with its path, exit 2 if there is one."""
    try:
        cfg = load_config(file)
        cfg.broker.resolve()
        from hub.plugins import discover, load_plugins

        # The plugins' own sections are checked by the models the installed plugins register.
        load_plugins(discover(), cfg.plugins, cfg.disabled_plugins, quiet=True).raise_for_problems()
    except PlantbusError as exc:
        _fail(exc)
        return
    click.echo(f"{file}: OK (host {cfg.host.host_id}, broker {cfg.broker.url}, {len(cfg.uns.mappings)} UNS mappings)")


@config.command("defaults")
def config_defaults() -> None:
    """Print the full default configuration as YAML, a starting point for a plant's file."""
    data = PlantbusConfig().model_dump(mode="json")
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@main.group()
def sparkplug() -> None:
    """Sparkplug B tools for engineers."""


@sparkplug.command()
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--topic", default="spBv1.0/#", show_default=True, help="MQTT filter to listen to")
@click.option("--count", type=int, default=None, help="stop after this many messages")
def sniff(broker: str, topic: str, count: int | None) -> None:
    """Print decoded Sparkplug traffic as JSON lines."""
    from hub.sniff import sniff as do_sniff

    try:
        url = BrokerUrl.parse(broker)
    except PlantbusError as exc:
        _fail(exc)
        return
    _run_async(do_sniff(url, topic, count))


@sparkplug.command()
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--group", default="sim", show_default=True, help="Sparkplug group id")
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--devices", default=2, show_default=True, type=click.IntRange(0, 10_000))
@click.option("--metrics", default=10, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--rate", default=1.0, show_default=True, type=click.FloatRange(0.001, 10_000), help="DDATA per device per second")
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
@click.option("--host-id", default=None, help="wait for this primary host's STATE before publishing")
@click.option("--state-dir", default="var", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="print the final statistics as one JSON line on stdout")
def simulate(
    broker: str,
    group: str,
    nodes: int,
    devices: int,
    metrics: int,
    rate: float,
    duration: float | None,
    host_id: str | None,
    state_dir: Path,
    seed: int,
    as_json: bool,
) -> None:
    """Simulated edge nodes with changing values: NODES x DEVICES x METRICS x RATE updates/s."""
    from hub.simulate import simulate as do_simulate

    try:
        url = BrokerUrl.parse(broker)
    except PlantbusError as exc:
        _fail(exc)
        return
    _setup_logging("INFO")
    click.echo(
        f"simulating {nodes} node(s) x {devices} device(s) x {metrics} metric(s) at {rate} Hz "
        f"= {nodes * max(devices, 1) * metrics * rate:,.0f} metric updates/s on {url}",
        err=True,
    )
    async def _simulate_and_report() -> None:
        stats = await do_simulate(
            url,
            group,
            nodes,
            devices,
            metrics,
            rate,
            state_dir=state_dir,
            duration_s=duration,
            primary_host_id=host_id,
            seed=seed,
        )
        click.echo(stats.summary(), err=True)
        if as_json:
            record = dataclasses.asdict(stats)
            record["achieved_rate"] = stats.achieved_rate
            click.echo(json.dumps(record))

    _run_async(_simulate_and_report())


main.add_command(db)


@main.group("plugins")
def plugins_group() -> None:
    """List installed plugins, or start a new one."""


@plugins_group.command("list")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML configuration (for disabled plugins and settings)")
@click.option("--live", is_flag=True, help="ask the running hub (its retained status topic) for state and lag")
@click.option("--broker", help="with --live: mqtt://user:pass@host:port; overrides broker.url of the file")
@click.option("--timeout", default=3.0, show_default=True, help="with --live: seconds to wait for the hub's status")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def plugins_list(config_file: Path | None, live: bool, broker: str | None, timeout: float, as_json: bool) -> None:
    """Name, version, hooks and state of every plugin; exit 2 if the hub would refuse to start."""
    from hub.plugins import discover, fetch_hub_status, load_plugins, plugin_table

    try:
        cfg = load_config(config_file)
        url = BrokerUrl.parse(broker) if broker else (cfg.broker.resolve() if live else None)
    except PlantbusError as exc:
        _fail(exc)
        return
    loaded = load_plugins(discover(), cfg.plugins, cfg.disabled_plugins, quiet=True)
    rows = {name: status.as_dict() for name, status in loaded.status.items()}
    if live:
        doc = asyncio.run(fetch_hub_status(url, cfg.uns.status_topic, timeout))
        if doc is None:
            click.echo(f"no running hub answered on {cfg.uns.status_topic} at {url} within {timeout:g} s; "
                       "showing the state at load", err=True)
        for name, remote in (doc or {}).get("plugins", {}).items():
            rows[name] = {**rows.get(name, {}), **remote}
    if as_json:
        click.echo(json.dumps(list(rows.values()), indent=2))
    else:
        click.echo(plugin_table(rows.values()), nl=False)
    problems = loaded.problems + loaded.config_problems
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        sys.exit(2)


@plugins_group.command("new")
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="where to create the package folder plantbus-NAME")
def plugins_new(name: str, directory: Path) -> None:
    """Create an installable plugin package plantbus-NAME (pyproject, module, README, test)."""
    from hub.scaffold import create_plugin

    try:
        root = create_plugin(name, directory)
    except PlantbusError as exc:
        _fail(exc)
        return
    click.echo(f"created {root}\nnext: pip install -e {root} && plantbus plugins list")


@main.group("cv")
def cv_group() -> None:
    """Edge computer vision: run the cameras of the `cv:` section, check them, train models."""


def _cv_config(config_file: Path | None) -> PlantbusConfig:
    config = load_config(config_file)
    if config.cv is None or not config.cv.nodes:
        where = config_file or "the default configuration"
        raise ConfigError(f"{where} has no cameras; add a `cv:` section with nodes.<node>.cameras.<camera>")
    return config


@cv_group.command("run")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML configuration")
@click.option("--node", help="run only this cv edge node (default: every node of cv.nodes)")
@click.option("--broker", help="mqtt://user:pass@host:port; overrides broker.url of the file")
def cv_run(config_file: Path | None, node: str | None, broker: str | None) -> None:
    """Run the cameras: each a Sparkplug device of its cv edge node, events on the unified namespace."""
    try:
        config = _cv_config(config_file)
        if broker:
            BrokerUrl.parse(broker)
        _setup_logging(config.log_level)
        from edge_cv.runner import CvRunner, publisher_factory

        assert config.cv is not None
        runner = CvRunner(config.cv, publisher_factory(config, broker), node)
    except PlantbusError as exc:
        _fail(exc)
        return
    _run_async(runner.run())


@cv_group.command("check")
@click.option("-c", "--config", "config_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YAML configuration")
@click.option("--node", help="check only this cv edge node")
def cv_check(config_file: Path, node: str | None) -> None:
    """Validate the cameras, load their models and open each source once; exit 2 if one fails."""
    import concurrent.futures

    try:
        config = _cv_config(config_file)
        from edge_cv.runner import check_camera, select_nodes

        assert config.cv is not None
        nodes = select_nodes(config.cv, node)
    except PlantbusError as exc:
        _fail(exc)
        return
    cv = config.cv
    cameras = [(n, c, cam) for n, c, cam in cv.cameras() if n in nodes]
    # Sources open in parallel: a camera that times out must not make the others wait.
    with concurrent.futures.ThreadPoolExecutor(max(1, min(8, len(cameras)))) as pool:
        results = list(pool.map(lambda item: check_camera(*item, cv), cameras))
    for result in results:
        verdict = "ok   " if result.ok else "error"
        click.echo(f"{verdict} {result.node}/{result.camera}: {result.message}")
    if not all(r.ok for r in results):
        sys.exit(2)


@cv_group.command("train")
@click.argument("kind", type=click.Choice(["classifier", "detector"]))
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="the .onnx to write")
@click.option("--size", default=None, type=int, help="input size in pixels (classifier: square crops, default 64; "
              "detector: a multiple of 32, default 320)")
@click.option("--epochs", default=None, type=click.IntRange(1, 10_000), help="passes over the data")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 256), help="torch CPU threads")
@click.option("--description", default="", help="what the data was, for the model's metadata")
def cv_train(kind: str, folder: Path, out: Path, size: int | None, epochs: int | None, seed: int, threads: int,
             description: str) -> None:
    """Train a crop classifier (FOLDER/<class>/*.jpg) or a small detector (FOLDER/images + labels in YOLO txt,
    classes.txt) on the CPU and export ONNX the pipeline reads. Needs the train extra (torch)."""
    from edge_cv.train import train_classifier, train_detector

    options: dict[str, object] = {"seed": seed, "threads": threads, "description": description}
    if epochs is not None:
        options["epochs"] = epochs
    try:
        if kind == "classifier":
            if size is not None:
                options["input_size"] = (size, size)
            result = train_classifier(folder, out, **options)  # type: ignore[arg-type]
        else:
            if size is not None:
                options["imgsz"] = size
            result = train_detector(folder, out, **options)  # type: ignore[arg-type]
    except PlantbusError as exc:
        _fail(exc)
        return
    figures = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    held_out = f"; held-out {figures}" if figures else ""
    click.echo(
        f"wrote {result.out}: classes {', '.join(result.classes)}; {result.train_samples} training and "
        f"{result.val_samples} held-out samples in {result.seconds:.0f} s{held_out}"
    )


def _add_plugin_commands() -> None:
    """Plugins add their subcommands (hook register_commands); last, so the core's commands win a clash."""
    from hub.plugins import add_plugin_commands

    for problem in add_plugin_commands(main):
        click.echo(f"warning: {problem}", err=True)


_add_plugin_commands()


if __name__ == "__main__":
    main()
