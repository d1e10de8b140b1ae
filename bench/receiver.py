"""Benchmark receiver: a plain paho subscriber in its own process that counts live messages and latency.

Every message's JSON carries `timestamp` (ms since the epoch, set when the value was produced); latency is
receipt time minus that. Retained messages (the state before the run) are not counted.
Usage: receiver.py PORT TOPIC_FILTER EXPECTED IDLE_SECONDS [MUST_CONTAIN]
Prints one JSON line: {"received": n, "p50_ms": .., "p99_ms": .., "first_ms": .., "last_ms": ..}.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import paho.mqtt.client as mqtt


def main() -> None:
    port, topic, expected, idle_timeout = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    # Optional: count only topics containing this text (device metrics, not node or status topics).
    must_contain = sys.argv[5] if len(sys.argv) > 5 else ""
    latencies: list[int] = []
    append = latencies.append
    # The first message on a topic is its birth value, stamped when the value was set, not when it was
    # published: it is counted but its "latency" is not a delivery latency, so it stays out of p50/p99.
    seen: set[str] = set()
    counted = [0]
    loads = json.loads
    state = {"last": time.monotonic(), "first_ms": None, "last_ms": None}

    def on_message(client, userdata, message):  # type: ignore[no-untyped-def]
        if message.retain or must_contain not in message.topic or message.topic.endswith("/_status"):
            return
        now = time.time_ns() // 1_000_000
        if state["first_ms"] is None:
            state["first_ms"] = now
        state["last_ms"] = now
        state["last"] = time.monotonic()
        counted[0] += 1
        timestamp = loads(message.payload)["timestamp"]
        if message.topic in seen:
            append(now - timestamp)
        else:
            seen.add(message.topic)

    subscribed = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-rx-{time.time_ns()}", clean_session=True)
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.append(True)
    client.connect("127.0.0.1", port, keepalive=60)
    client.subscribe(topic, qos=0)
    while not subscribed:
        client.loop(0.1)
    print("ready", flush=True)
    state["last"] = time.monotonic()
    started = False
    # SIGTERM ends the count early and still prints the result (for runs whose total is not known up front).
    signal.signal(signal.SIGTERM, lambda *_: state.__setitem__("stop", True))
    while counted[0] < expected and not state.get("stop"):
        client.loop(0.05)
        if counted[0]:
            started = True
        limit = idle_timeout if started else idle_timeout * 6
        if time.monotonic() - state["last"] > limit:
            break
    client.disconnect()
    latencies.sort()
    n = len(latencies)
    result = {
        "received": counted[0],
        "p50_ms": latencies[n // 2] if n else None,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] if n else None,
        "first_ms": state["first_ms"],
        "last_ms": state["last_ms"],
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
