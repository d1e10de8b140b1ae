"""UNS browser: the namespace as a lazy tree, a searchable paged table, tag details, a trend and (optionally) a write."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from nicegui import ui

from ui.i18n import table_props
from ui.uns_client import Tag, TagStore

if TYPE_CHECKING:
    from ui.app import Console
    from ui.i18n import Translator

PAGE_ROWS = 50
TREE_LIMIT = 200  # children drawn per tree level; search reaches the rest
PLACEHOLDER = "\x00"
HOUR_MS = 3_600_000


def tree_nodes(store: TagStore, expanded: set[str], t: Translator, prefix: str = "") -> list[dict[str, Any]]:
    """Quasar tree nodes for `prefix`, descending only into expanded folders (the rest get a placeholder)."""
    entries, total = store.children(prefix, TREE_LIMIT)
    nodes = []
    for entry in entries:
        node: dict[str, Any] = {"id": entry.path, "label": entry.name}
        if entry.tag is not None:
            node["v"] = tag_text(entry.tag)
            node["q"] = entry.tag.quality
        if entry.path in store._children:
            node["label"] = f"{entry.name} ({entry.tags_below})"
            node["children"] = (
                tree_nodes(store, expanded, t, entry.path) if entry.path in expanded
                else [{"id": entry.path + "/" + PLACEHOLDER, "label": "…"}]
            )  # fmt: skip
        nodes.append(node)
    if total > len(entries):
        nodes.append({"id": (prefix or "") + "/" + PLACEHOLDER + "more", "label": t("browser.more", n=total - len(entries))})
    return nodes


def tag_text(tag: Tag) -> str:
    """Value with its unit-less type hint, as the tree shows it."""
    from ui.app import format_value

    return format_value(tag.value)


def table_rows(tags: list[Tag], t: Translator) -> list[dict[str, Any]]:
    """One row per tag on the current page."""
    from ui.app import format_ts, format_value

    return [
        {"path": tag.path, "value": format_value(tag.value), "quality": t(f"quality.{tag.quality}"),
         "q": tag.quality, "timestamp": format_ts(tag.timestamp), "datatype": tag.datatype or ""}
        for tag in tags
    ]  # fmt: skip


def parse_input(text: str) -> Any:
    """An operator's input as a JSON value where it parses (numbers, true/false), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def build(console: Console, t: Translator) -> None:
    """Draw the UNS browser page for one visitor."""
    from ui.app import REFRESH_S, format_ts, format_value

    store = console.store
    view: dict[str, Any] = {"expanded": set(), "selected": None, "under": "", "search": "", "offset": 0,
                            "version": -1}

    with ui.row().classes("w-full no-wrap items-start gap-4"):
        with ui.card().classes("w-1/4 min-w-[260px]"):
            ui.label(t("browser.tree")).classes("text-subtitle1 font-bold")
            tree = ui.tree(tree_nodes(store, view["expanded"], t), node_key="id", label_key="label")
            tree.add_slot("default-header", r"""
                <span :class="props.node.q ? 'q-' + props.node.q : ''">{{ props.node.label }}</span>
                <span v-if="props.node.v !== undefined" class="tag-value" :class="'q-' + props.node.q">{{ props.node.v }}</span>
            """)
        with ui.column().classes("grow"):
            search = ui.input(t("browser.search")).props("clearable outlined dense for=tag-search").classes("w-full")
            table = ui.table(
                columns=[
                    {"name": "path", "label": t("col.path"), "field": "path", "align": "left"},
                    {"name": "value", "label": t("col.value"), "field": "value", "align": "right"},
                    {"name": "quality", "label": t("col.quality"), "field": "quality"},
                    {"name": "timestamp", "label": t("col.timestamp"), "field": "timestamp"},
                    {"name": "datatype", "label": t("col.datatype"), "field": "datatype"},
                ],
                rows=[], row_key="path",
            ).props("dense flat bordered hide-pagination :rows-per-page-options='[0]'").classes("w-full")
            table.props.update(table_props(t))
            table.add_slot("body-cell-value", r"""
                <q-td :props="props"><span class="tag-value" :class="'q-' + props.row.q">{{ props.value }}</span></q-td>
            """)
            table.add_slot("body-cell-quality", r"""
                <q-td :props="props"><q-badge :color="{GOOD: 'green-8', STALE: 'orange-8', BAD: 'red-8'}[props.row.q]"
                  :label="props.value" /></q-td>
            """)
            with ui.row().classes("items-center gap-2"):
                prev_button = ui.button(t("browser.prev"), on_click=lambda: page(-PAGE_ROWS)).props("flat dense")
                pager = ui.label()
                next_button = ui.button(t("browser.next"), on_click=lambda: page(PAGE_ROWS)).props("flat dense")
            details = ui.card().classes("w-full")

    def draw_table() -> None:
        tags, total = store.search(view["search"], view["offset"], PAGE_ROWS, view["under"])
        table.rows = table_rows(tags, t)
        table.update()
        if total:
            pager.text = t("browser.page", first=view["offset"] + 1, last=view["offset"] + len(tags), total=total)
        else:
            pager.text = t("browser.empty")
        prev_button.set_enabled(view["offset"] > 0)
        next_button.set_enabled(view["offset"] + PAGE_ROWS < total)

    def page(delta: int) -> None:
        view["offset"] = max(0, view["offset"] + delta)
        draw_table()

    def on_search(e: Any) -> None:
        view["search"] = e.value or ""
        view["offset"] = 0
        draw_table()

    search.on_value_change(on_search)

    def on_expand(e: Any) -> None:
        view["expanded"] = {key for key in (e.value or []) if PLACEHOLDER not in key}
        tree._props["nodes"] = tree_nodes(store, view["expanded"], t)
        tree.update()

    def on_select(e: Any) -> None:
        key = e.value
        if not key or PLACEHOLDER in key:
            return
        if key in store.tags:
            select(key)
        else:
            view["under"] = key
            view["offset"] = 0
            draw_table()

    tree.on_expand(on_expand)
    tree.on_select(on_select)
    table.on("rowClick", lambda e: select(e.args[1]["path"]))

    def draw_details() -> None:
        details.clear()
        path = view["selected"]
        tag = store.tags.get(path) if path else None
        with details:
            if tag is None:
                ui.label(t("browser.select")).classes("text-grey-7")
                return
            ui.label(t("detail.title")).classes("text-subtitle1 font-bold")
            with ui.grid(columns=2).classes("gap-x-6 gap-y-1"):
                for key, text in (
                    ("col.path", tag.path), ("col.value", format_value(tag.value)),
                    ("col.quality", t(f"quality.{tag.quality}")), ("col.timestamp", format_ts(tag.timestamp)),
                    ("col.datatype", tag.datatype or ""), ("col.changes", str(tag.changes)),
                ):  # fmt: skip
                    ui.label(t(key)).classes("text-grey-7")
                    label = ui.label(text)
                    if key == "col.value":
                        label.classes(f"tag-value q-{tag.quality}").props("id=detail-value")
                    elif key == "col.changes":
                        label.props("id=detail-changes")
            if console.can_write:
                with ui.row().classes("items-center"):
                    entry = ui.input(t("write.value")).props("dense outlined")
                    ui.button(t("write.button"), on_click=lambda: confirm_write(tag.path, entry.value))
            else:
                ui.label(t("write.off")).classes("text-caption text-grey-7")
            ui.label(t("trend.title")).classes("text-subtitle2 mt-2")
            trend_box = ui.column().classes("w-full")
        ui.timer(0, lambda: draw_trend(tag.path, trend_box), once=True)

    async def draw_trend(path: str, box: ui.column) -> None:
        historian = console.historian
        with box:
            if historian is None:
                ui.label(t("trend.none")).classes("text-grey-7")
                return
            end = int(time.time() * 1000) + 1
            try:
                points = (await historian.query_raw(path, end - HOUR_MS, end, limit=5000)).get(path, [])
            except Exception as exc:  # noqa: BLE001 - a historian problem must not break the page
                ui.label(t("trend.error", error=exc)).classes("text-red-8")
                return
            numeric = [(p.ts, p.value) for p in points if isinstance(p.value, (int, float))]
            if not numeric:
                ui.label(t("trend.empty")).classes("text-grey-7")
                return
            ui.echart({
                "xAxis": {"type": "time"}, "yAxis": {"type": "value", "scale": True},
                "tooltip": {"trigger": "axis"}, "grid": {"left": 50, "right": 20, "top": 10, "bottom": 30},
                "series": [{"type": "line", "showSymbol": False, "data": [[ts, v] for ts, v in numeric]}],
            }).classes("w-full h-64")

    def confirm_write(path: str, text: str | None) -> None:
        value = parse_input(text or "")
        with ui.dialog() as dialog, ui.card():
            ui.label(t("write.confirm", value=json.dumps(value, ensure_ascii=False), path=path))
            with ui.row():
                ui.button(t("write.cancel"), on_click=dialog.close).props("flat")

                async def send() -> None:
                    dialog.close()
                    try:
                        await console.write(path, value)
                    except Exception as exc:  # noqa: BLE001 - shown to the operator
                        ui.notify(t("write.failed", error=exc), type="negative")
                    else:
                        ui.notify(t("write.done", path=path), type="positive")

                ui.button(t("write.ok"), on_click=send).props("color=negative")
        dialog.open()

    def select(path: str) -> None:
        view["selected"] = path
        draw_details()

    def refresh() -> None:
        # Redraw only what is on screen, and only when something arrived since the last redraw.
        if store.version == view["version"]:
            return
        view["version"] = store.version
        tree._props["nodes"] = tree_nodes(store, view["expanded"], t)
        tree.update()
        draw_table()
        path = view["selected"]
        tag = store.tags.get(path) if path else None
        if tag is None:
            return
        # The live fields of the details card follow the tag; the rest (path, type) does not change.
        for element in details.descendants():
            if not isinstance(element, ui.label):
                continue
            if element.props.get("id") == "detail-value":
                element.text = format_value(tag.value)
                element.classes(replace=f"tag-value q-{tag.quality}")
            elif element.props.get("id") == "detail-changes":
                element.text = str(tag.changes)

    draw_details()
    refresh()
    ui.timer(REFRESH_S, refresh)
