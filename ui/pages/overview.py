"""Plant overview: Sparkplug nodes and devices online/offline, the hub's figures, connector and plugin health."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nicegui import ui

from ui.i18n import table_props
from ui.uns_client import TagStore

if TYPE_CHECKING:
    from ui.app import Console
    from ui.i18n import Translator


def node_rows(store: TagStore, t: Translator) -> list[dict[str, Any]]:
    """One row per node or device `_status` seen, offline first so trouble is on top."""
    from ui.app import format_ts

    nodes = sorted(store.node_list(), key=lambda n: (n.online, n.path))
    return [
        {"path": n.path, "state": t("overview.online" if n.online else "overview.offline"), "online": n.online,
         "reason": n.reason or "", "since": format_ts(n.timestamp)}
        for n in nodes
    ]  # fmt: skip


def health_rows(diagnostics: dict[str, Any] | None, t: Translator) -> list[dict[str, Any]]:
    """Connectors (when the hub reports them) and plugins, with state, rate and last error."""
    rows: list[dict[str, Any]] = []
    if not diagnostics:
        return rows
    for kind, section in (("connector", diagnostics.get("connectors")), ("plugin", diagnostics.get("plugins"))):
        for name, doc in sorted((section or {}).items()):
            if not isinstance(doc, dict):
                continue
            rate = doc.get("messages_per_s", doc.get("metrics_per_s", doc.get("rate")))
            if rate is None and isinstance(doc.get("lag"), dict):
                rate = f"lag {doc['lag'].get('items', 0)}"
            state = str(doc.get("state", doc.get("online", "")))
            rows.append({"key": f"{kind}:nodes", "name": name, "kind": t(f"kind.{kind}"), "state": state,
                         "ok": state in ("running", "loaded", "online", "True", "connected"),
                         "rate": "" if rate is None else str(rate), "last_error": doc.get("last_error") or ""})
    return rows


def hub_line(console: Console, t: Translator) -> str:
    """One sentence about the hub, from its last diagnostics document."""
    store = console.store
    diag = store.diagnostics
    if not diag:
        return t("overview.hub_none", topic=console.settings.uns.status_topic)
    host = diag.get("host") or {}
    age = round((time.time() * 1000 - (store.diagnostics_ms or 0)) / 1000)
    return t("overview.hub_line", host_id=host.get("host_id", "?"), msgs=host.get("messages_per_s", 0),
             metrics=host.get("metrics_per_s", 0), nodes=host.get("nodes_online", 0), age=age)


def build(console: Console, t: Translator) -> None:
    """Draw the overview page for one visitor."""
    from ui.app import REFRESH_S

    store = console.store
    seen = {"version": -1}
    with ui.column().classes("w-full gap-4"):
        with ui.card().classes("w-full"):
            with ui.row().classes("items-center gap-4"):
                ui.label(t("overview.nodes")).classes("text-subtitle1 font-bold")
                summary = ui.label().props("id=nodes-summary")
            nodes = ui.table(
                columns=[
                    {"name": "path", "label": t("col.node"), "field": "path", "align": "left"},
                    {"name": "state", "label": t("col.state"), "field": "state"},
                    {"name": "reason", "label": t("col.reason"), "field": "reason"},
                    {"name": "since", "label": t("col.since"), "field": "since"},
                ],
                rows=[], row_key="path", pagination=25,
            ).props("dense flat bordered").classes("w-full")
            # Without 0 ("All", a Quasar text no prop translates) in the choices; labels in the page's language.
            nodes.props.update(table_props(t), **{":rows-per-page-options": "[10, 25, 50, 100]"})
            nodes.add_slot("body-cell-state", r"""
                <q-td :props="props"><q-badge :color="props.row.online ? 'green-8' : 'red-8'" :label="props.value" /></q-td>
            """)
        with ui.card().classes("w-full"):
            ui.label(t("overview.hub")).classes("text-subtitle1 font-bold")
            hub_label = ui.label().props("id=hub-line")
            ui.label(t("overview.connectors")).classes("text-subtitle2 mt-2")
            health = ui.table(
                columns=[
                    {"name": "name", "label": t("col.name"), "field": "name", "align": "left"},
                    {"name": "kind", "label": t("col.kind"), "field": "kind"},
                    {"name": "state", "label": t("col.state"), "field": "state"},
                    {"name": "rate", "label": t("col.rate"), "field": "rate"},
                    {"name": "last_error", "label": t("col.last_error"), "field": "last_error", "align": "left"},
                ],
                rows=[], row_key="key", pagination=25,
            ).props("dense flat bordered").classes("w-full")
            # Without 0 ("All", a Quasar text no prop translates) in the choices; labels in the page's language.
            health.props.update(table_props(t), **{":rows-per-page-options": "[10, 25, 50, 100]"})
            health.add_slot("body-cell-state", r"""
                <q-td :props="props"><q-badge :color="props.row.ok ? 'green-8' : 'red-8'" :label="props.value" /></q-td>
            """)

    def refresh() -> None:
        hub_label.text = hub_line(console, t)  # its age moves even when nothing arrives
        if store.version == seen["version"]:
            return
        seen["version"] = store.version
        rows = node_rows(store, t)
        online = sum(1 for r in rows if r["online"])
        summary.text = t("overview.summary", online=online, total=len(rows)) if rows else t("overview.nodes_empty")
        nodes.rows = rows
        nodes.update()
        health.rows = health_rows(store.diagnostics, t)
        health.update()

    refresh()
    ui.timer(REFRESH_S, refresh)
