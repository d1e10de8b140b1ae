"""SparkplugTopic: the only way Plantbus builds or splits `spBv1.0/...` topics (specification chapter 4)."""

from __future__ import annotations

import pytest

from hub.errors import TopicError
from hub.sparkplug.topic import ALL_TOPICS, NAMESPACE, MessageType, SparkplugTopic, legacy_state_topic, validate_id

NODE_TYPES = [MessageType.NBIRTH, MessageType.NDEATH, MessageType.NDATA, MessageType.NCMD]
DEVICE_TYPES = [MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD]


@pytest.mark.spec("tck-id-topic-structure", "tck-id-topic-structure-namespace-a")
def test_namespace_is_spbv1_0_and_the_host_subscribes_to_all_of_it():
    assert NAMESPACE == "spBv1.0"
    assert ALL_TOPICS == "spBv1.0/#"


@pytest.mark.spec(
    "tck-id-topic-structure",
    "tck-id-topics-nbirth-topic",
    "tck-id-topics-ndeath-topic",
    "tck-id-topics-ndata-topic",
    "tck-id-topics-ncmd-topic",
    "tck-id-topic-structure-namespace-device-id-non-associated-message-types",
)
@pytest.mark.parametrize("mt", NODE_TYPES, ids=lambda m: m.value)
def test_node_topics_have_the_form_namespace_group_type_edge_node(mt):
    topic = SparkplugTopic.node(mt, "Plant 1", "Line-3 Filler")
    assert str(topic) == f"spBv1.0/Plant 1/{mt.value}/Line-3 Filler"
    assert SparkplugTopic.parse(str(topic)) == topic
    assert topic.device_id is None and not topic.is_device and not mt.is_device


@pytest.mark.spec(
    "tck-id-topic-structure",
    "tck-id-topics-dbirth-topic",
    "tck-id-topics-ddeath-topic",
    "tck-id-topics-ddata-topic",
    "tck-id-topics-dcmd-topic",
    "tck-id-topic-structure-namespace-device-id-associated-message-types",
)
@pytest.mark.parametrize("mt", DEVICE_TYPES, ids=lambda m: m.value)
def test_device_topics_have_the_form_namespace_group_type_edge_node_device(mt):
    topic = SparkplugTopic.device(mt, "Plant 1", "Line-3 Filler", "Checkweigher°2")
    assert str(topic) == f"spBv1.0/Plant 1/{mt.value}/Line-3 Filler/Checkweigher°2"
    assert SparkplugTopic.parse(str(topic)) == topic
    assert topic.is_device and mt.is_device


@pytest.mark.spec("tck-id-host-topic-phid-birth-topic", "tck-id-host-topic-phid-death-topic")
def test_state_topic_has_the_form_namespace_state_host_id():
    topic = SparkplugTopic.state("plantbus-a")
    assert str(topic) == "spBv1.0/STATE/plantbus-a"
    parsed = SparkplugTopic.parse("spBv1.0/STATE/plantbus-a")
    assert parsed == topic and parsed.message_type is MessageType.STATE and parsed.host_id == "plantbus-a"
    assert parsed.group_id is None and parsed.edge_node_id is None


def test_legacy_sparkplug_2_2_state_topic():
    assert legacy_state_topic("scada") == "STATE/scada"
    with pytest.raises(TopicError):
        legacy_state_topic("a/b")


@pytest.mark.spec("tck-id-topic-structure-namespace-device-id-associated-message-types")
@pytest.mark.parametrize("mt", DEVICE_TYPES, ids=lambda m: m.value)
def test_device_message_types_require_a_device_id(mt):
    with pytest.raises(TopicError, match="needs a device id"):
        SparkplugTopic.parse(f"spBv1.0/g/{mt.value}/e")
    with pytest.raises(TopicError, match="device id"):
        SparkplugTopic.node(mt, "g", "e")


@pytest.mark.spec("tck-id-topic-structure-namespace-device-id-non-associated-message-types")
@pytest.mark.parametrize("mt", NODE_TYPES, ids=lambda m: m.value)
def test_node_message_types_refuse_a_device_id(mt):
    with pytest.raises(TopicError, match="must not carry a device id"):
        SparkplugTopic.parse(f"spBv1.0/g/{mt.value}/e/d")
    with pytest.raises(TopicError, match="carry no device id"):
        SparkplugTopic.device(mt, "g", "e", "d")


@pytest.mark.spec("tck-id-topic-structure-namespace-device-id-non-associated-message-types")
def test_state_carries_only_the_host_id():
    with pytest.raises(TopicError, match="STATE belongs at"):
        SparkplugTopic.parse("spBv1.0/g/STATE/e")
    with pytest.raises(TopicError, match="unknown message type .host."):
        SparkplugTopic.parse("spBv1.0/STATE/host/extra")
    with pytest.raises(TopicError, match="only the host id"):
        SparkplugTopic(MessageType.STATE, group_id="g", host_id="h")


@pytest.mark.spec(
    "tck-id-topic-structure-namespace-valid-group-id",
    "tck-id-topic-structure-namespace-valid-edge-node-id",
    "tck-id-topic-structure-namespace-valid-device-id",
    "tck-id-intro-group-id-chars",
    "tck-id-intro-edge-node-id-chars",
    "tck-id-intro-device-id-chars",
)
@pytest.mark.parametrize("bad", ["a+b", "a/b", "a#b", "+", "#", "/", "with\x00nul"])
@pytest.mark.parametrize("where", ["group", "edge_node", "device", "host"])
def test_reserved_characters_and_nul_are_refused_in_every_id(bad, where):
    ids = {"group": "g", "edge_node": "e", "device": "d"}
    with pytest.raises(TopicError):
        if where == "host":
            SparkplugTopic.state(bad)
        else:
            ids[where] = bad
            SparkplugTopic.device(MessageType.DDATA, ids["group"], ids["edge_node"], ids["device"])


@pytest.mark.spec(
    "tck-id-intro-group-id-string",
    "tck-id-intro-edge-node-id-string",
    "tck-id-intro-device-id-string",
    "tck-id-topic-structure-namespace-valid-group-id",
    "tck-id-topic-structure-namespace-valid-edge-node-id",
    "tck-id-topic-structure-namespace-valid-device-id",
)
def test_ids_are_utf8_strings():
    # any UTF-8 apart from + / # (and NUL, which MQTT forbids) is fine, spaces and Cyrillic included
    topic = SparkplugTopic.device(MessageType.DDATA, "Завод №1", "Линия 3 (салаты)", "Весы-чекер 😀")
    assert SparkplugTopic.parse(str(topic)) == topic
    assert str(topic).encode("utf-8")
    with pytest.raises(TopicError, match="not valid UTF-8"):
        validate_id("group id", "bad\ud800surrogate")
    for not_a_string in (None, 5, b"bytes", ""):
        with pytest.raises(TopicError, match="non-empty string"):
            validate_id("edge node id", not_a_string)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("spAv1.0/g/NBIRTH/e", "not in the spBv1.0 namespace"),
        ("spbv1.0/g/NBIRTH/e", "not in the spBv1.0 namespace"),
        ("g/NBIRTH/e", "not in the spBv1.0 namespace"),
        ("spBv1.0", "has 1 levels"),
        ("spBv1.0/g", "has 2 levels"),
        ("spBv1.0/g/NBIRTH", "has 3 levels"),
        ("spBv1.0/g/DDATA/e/d/x", "has 6 levels"),
        ("spBv1.0/g/nbirth/e", "unknown message type 'nbirth'"),
        ("spBv1.0/g/NBIRTHX/e", "unknown message type"),
        ("spBv1.0/g/NBIRTH/", "non-empty"),
        ("spBv1.0//NBIRTH/e", "non-empty"),
        ("spBv1.0/g/DBIRTH/e/", "non-empty"),
        ("spBv1.0/STATE/", "non-empty"),
        ("spBv1.0/g/NDATA/+", "reserved"),
        ("spBv1.0/#", "has 2 levels"),
    ],
)
def test_parse_refuses_what_is_not_a_sparkplug_b_topic_and_says_why(text, reason):
    with pytest.raises(TopicError, match=reason):
        SparkplugTopic.parse(text)


@pytest.mark.spec("tck-id-topic-structure-namespace-duplicate-device-id-across-edge-node")
def test_the_same_device_id_under_two_edge_nodes_is_two_distinct_topics():
    a = SparkplugTopic.device(MessageType.DBIRTH, "g", "e1", "scale")
    b = SparkplugTopic.device(MessageType.DBIRTH, "g", "e2", "scale")
    assert a != b and str(a) != str(b)
    assert {SparkplugTopic.parse(str(a)), SparkplugTopic.parse(str(b))} == {a, b}


def test_ids_are_case_sensitive():
    # Sparkplug ids differing only in case are distinct (case-sensitivity-* only says they SHOULD NOT occur)
    assert SparkplugTopic.parse("spBv1.0/G/NDATA/E") != SparkplugTopic.parse("spBv1.0/g/NDATA/e")


def test_topics_are_hashable_frozen_values():
    topic = SparkplugTopic.device(MessageType.DDATA, "g", "e", "d")
    with pytest.raises(AttributeError):
        topic.group_id = "other"  # type: ignore[misc]
    assert {topic: 1}[SparkplugTopic.parse("spBv1.0/g/DDATA/e/d")] == 1


def test_with_type_and_node_topic_derive_related_topics():
    ddata = SparkplugTopic.parse("spBv1.0/g/DDATA/e/d")
    assert str(ddata.with_type(MessageType.DBIRTH)) == "spBv1.0/g/DBIRTH/e/d"
    assert str(ddata.node_topic(MessageType.NCMD)) == "spBv1.0/g/NCMD/e"
    assert str(SparkplugTopic.parse("spBv1.0/g/NDATA/e").node_topic(MessageType.NBIRTH)) == "spBv1.0/g/NBIRTH/e"


def test_message_type_predicates():
    assert [m.value for m in MessageType if m.is_birth] == ["NBIRTH", "DBIRTH"]
    assert [m.value for m in MessageType if m.is_death] == ["NDEATH", "DDEATH"]
    assert [m.value for m in MessageType if m.is_data] == ["NDATA", "DDATA"]
    assert [m.value for m in MessageType if m.is_command] == ["NCMD", "DCMD"]
    assert [m.value for m in MessageType if m.is_device] == ["DBIRTH", "DDEATH", "DDATA", "DCMD"]
