"""Benchmark load: plain paho publishing mirror-sized JSON messages at a fixed rate, for the broker ceiling."""

from __future__ import annotations

import json
import sys
import time

import paho.mqtt.client as mqtt


def main() -> None:
    port, rate, duration, topics = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-tx-{time.time_ns()}", clean_session=True)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    names = [f"bench/raw/dev-{i % 100}/metric-{i}" for i in range(topics)]
    total = int(rate * duration)
    batch = max(1, int(rate / 100))  # publish in 10 ms bursts, as a DDATA of many metrics would
    sent = 0
    start = time.monotonic()
    while sent < total:
        due = start + sent / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now_ms = time.time_ns() // 1_000_000
        for _ in range(min(batch, total - sent)):
            payload = json.dumps({"value": sent * 0.5, "timestamp": now_ms, "quality": "GOOD", "datatype": "Double"})
            client.publish(names[sent % topics], payload, qos=0, retain=True)
            sent += 1
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"sent": sent, "elapsed_s": elapsed}), flush=True)


if __name__ == "__main__":
    main()
