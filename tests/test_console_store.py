"""The console's tag store and i18n: 10,000 tags stay fast, documents are routed, both languages are complete."""

from __future__ import annotations

import json
import time

import aiomqtt

from hub import uns_paths
from hub.config import UnsConfig
from hub.uns_paths import UnsPath
from ui.i18n import LANGUAGES, STRINGS, translator
from ui.pages.uns_browser import tree_nodes
from ui.uns_client import TagStore, subscription_filters


def doc(value: float, quality: str = "GOOD") -> bytes:
    return json.dumps({"value": value, "timestamp": 1_700_000_000_000, "quality": quality,
                       "datatype": "Double"}).encode()


def test_store_with_10000_tags_updates_and_draws_one_screen_fast() -> None:
    store = TagStore()
    topics = [f"uns/plant1/line{i % 10}/machine{i % 100}/tag{i}" for i in range(10_000)]
    payloads = [doc(float(i)) for i in range(10_000)]
    start = time.perf_counter()
    for topic, payload in zip(topics, payloads):
        store.update(topic, payload)
    for topic, payload in zip(topics, payloads[::-1]):  # a second full round: every value changes
        store.update(topic, payload)
    ingest_s = time.perf_counter() - start

    t = translator("en")
    start = time.perf_counter()
    nodes = tree_nodes(store, {"uns", "uns/plant1", "uns/plant1/line3"}, t)
    tree_s = time.perf_counter() - start
    start = time.perf_counter()
    page, total = store.search("machine42 tag", 0, 50)
    search_s = time.perf_counter() - start
    print(f"\n10,000 tags: {20_000 / ingest_s:,.0f} updates/s into the store; tree of 3 expanded levels "
          f"{tree_s * 1000:.2f} ms; search over all tags {search_s * 1000:.2f} ms")

    assert len(store.tags) == 10_000
    assert sum(tag.changes for tag in store.tags.values()) == 10_000 - sum(
        1 for i in range(10_000) if float(i) == float(9_999 - i))
    assert nodes[0]["label"] == "uns (10000)"
    line3 = nodes[0]["children"][0]["children"][3]
    assert line3["id"] == "uns/plant1/line3" and len(line3["children"]) == 10  # machines 3, 13, ... 93
    assert total == 100 and len(page) == 50 and all("machine42/" in tag.path for tag in page)
    # Bounds well above what the 2-core machine measures, so only a real regression fails.
    assert ingest_s < 2.0
    assert tree_s < 0.05
    assert search_s < 0.2


def test_store_routes_status_diagnostics_and_skips_historical_values() -> None:
    store = TagStore(status_topic="plantbus/status")
    store.update("uns/plant1/salad-plc/_status", json.dumps({"online": False, "reason": "death", "bdSeq": 4}))
    store.update("plantbus/status", json.dumps({"host": {"host_id": "plantbus"}}))
    store.update("uns/plant1/salad-plc/sleever/speed", doc(12.0, "STALE"))
    store.update("uns/plant1/salad-plc/sleever/speed", json.dumps({"value": 1.0, "historical": True}))
    store.update("uns/plant1/salad-plc/sleever/bad", b"not json")

    node = store.nodes["uns/plant1/salad-plc"]
    assert (node.online, node.reason, node.bd_seq) == (False, "death", 4)
    assert store.diagnostics == {"host": {"host_id": "plantbus"}}
    tag = store.tags["uns/plant1/salad-plc/sleever/speed"]
    assert (tag.value, tag.quality) == (12.0, "STALE")
    assert list(store.tags) == ["uns/plant1/salad-plc/sleever/speed"] and store.malformed == 1

    store.update("uns/plant1/salad-plc/sleever/speed", b"")  # retained message cleared on the broker
    assert store.tags == {} and store.children("")[1] == 0


def test_camera_events_are_not_tags_and_bytes_on_the_uns_are_still_malformed() -> None:
    store = TagStore()
    store.update("uns/plant1/cv-oatbar/verifier/cv/events", json.dumps({"id": "e1", "kind": "spill", "time": 1}))
    store.update("uns/plant1/cv-oatbar/verifier/fps", doc(9.5, "GOOD"))
    assert list(store.tags) == ["uns/plant1/cv-oatbar/verifier/fps"] and store.malformed == 0
    # Snapshots no longer live under the UNS: JPEG bytes there are a malformed message like any other non-JSON.
    store.update("uns/plant1/cv-oatbar/verifier/cv/snapshots/e1", b"\xff\xd8\xff\xe0 JPEG bytes")
    assert list(store.tags) == ["uns/plant1/cv-oatbar/verifier/fps"] and store.malformed == 1


def test_subscription_covers_prefix_mapping_roots_and_status_topic() -> None:
    uns = UnsConfig.model_validate({"mappings": [
        {"group": "plant1", "path": "zdorovo/plant1/packaging/{edge_node}/{device}"}]})
    assert subscription_filters(uns) == ["uns/#", "zdorovo/#", "plantbus/status"]


def test_the_consoles_subscription_receives_no_camera_snapshots() -> None:
    uns = UnsConfig.model_validate({"mappings": [
        {"group": "plant1", "path": "zdorovo/plant1/packaging/{edge_node}/{device}"}]})
    filters = subscription_filters(uns)
    for device in ("uns/plant1/cv-oatbar/verifier", "zdorovo/plant1/packaging/cv-oatbar/verifier"):
        snapshot = str(uns_paths.snapshot_topic(UnsPath.parse(device), "e1"))
        assert not [f for f in filters if aiomqtt.Topic(snapshot).matches(f)], snapshot
        assert [f for f in filters if aiomqtt.Topic(f"{device}/fps").matches(f)]  # the filters are not just empty


def test_snapshot_bytes_reaching_the_store_through_a_root_named_plantbus_are_ignored() -> None:
    # A UNS root named `plantbus` makes the console's `plantbus/#` cover the snapshots: skipped, not malformed.
    store = TagStore()
    store.update("plantbus/cv/snapshots/plantbus/plant1/cv-oatbar/verifier/e1", b"\xff\xd8\xff\xe0 JPEG bytes")
    assert store.tags == {} and store.malformed == 0


def test_every_console_string_exists_in_english_and_russian() -> None:
    missing = [f"{key} ({lang})" for key, entry in STRINGS.items() for lang in LANGUAGES if not entry.get(lang)]
    assert missing == []
    assert translator("ru")("overview.summary", online=1, total=2) == "в сети 1 из 2"
    assert translator("xx").lang == "en"
