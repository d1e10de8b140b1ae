#!/usr/bin/env python3
"""`make bench`: Plantbus's Sparkplug pipeline measured on this machine, against the raw broker.

All processes run on this one machine with the broker: simulated edge nodes (`plantbus sparkplug simulate`)
-> Mosquitto -> the hub (`plantbus run`: host decode + UNS mirror) -> a plain paho subscriber on the mirror.
Printed:
  * the highest offered load (metric updates/s) the pipeline sustained with zero loss,
  * p50/p99 latency from DDATA publish to mirror receipt, at 10,000 updates/s and at the top rate,
  * the hub's CPU while sustaining it,
  * the raw broker ceiling: plain paho publish -> Mosquitto -> the same subscriber, the same way, and the ratio,
  * decode-only metrics/s of the host on one core (no network).
Targets (issue 2): >= 20,000 updates/s end to end with no loss; p99 < 100 ms at 10,000/s.
A load step counts as sustained when nothing was lost, the subscriber kept pace (>= 95 % of the offer) and
p99 stayed under 250 ms. Latency excludes each topic's first (birth) value, which carries the time it was set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.broker import LocalMosquitto  # noqa: E402

PY = sys.executable
# Shape of the simulated plant: 10 nodes x 10 devices x 20 metrics = 2,000 metric updates per tick.
NODES, DEVICES, METRICS = 10, 10, 20
PER_TICK = NODES * DEVICES * METRICS
# Text that only mirrored device-metric topics contain (the simulator's devices are dev-<j>).
DEVICE_METRIC_MARK = "/dev-"


@dataclass
class Run:
    offered: float
    sent: int
    received: int
    p50_ms: float | None
    p99_ms: float | None
    achieved: float
    hub_cpu: float | None = None

    @property
    def lossless(self) -> bool:
        return self.sent > 0 and self.received >= self.sent

    @property
    def sustained(self) -> bool:
        # No loss, kept pace with the offer, and no queue building up (p99 within a quarter second).
        return self.lossless and self.achieved >= 0.95 * self.offered and (self.p99_ms or 0) < 250


def _start_receiver(
    port: int, topic: str, expected: int, idle_s: float = 3.0, must_contain: str = ""
) -> subprocess.Popen[str]:
    rx = subprocess.Popen(
        [PY, str(ROOT / "bench/receiver.py"), str(port), topic, str(expected), str(idle_s), must_contain],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert rx.stdout is not None
    line = rx.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"receiver did not start: {line!r}")
    return rx


def _finish_receiver(rx: subprocess.Popen[str]) -> dict:
    out, _ = rx.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def _achieved(result: dict, received: int) -> float:
    if not received or result["first_ms"] is None or result["last_ms"] == result["first_ms"]:
        return 0.0
    return received / ((result["last_ms"] - result["first_ms"]) / 1000)


def raw_broker(port: int, rate: float, duration: float) -> Run:
    """Plain paho publisher -> Mosquitto -> paho subscriber, mirror-sized JSON, retained, QoS 0."""
    expected = int(rate * duration)
    rx = _start_receiver(port, "bench/raw/#", expected)
    tx = subprocess.run(
        [PY, str(ROOT / "bench/paho_publisher.py"), str(port), str(rate), str(duration), str(PER_TICK)],
        capture_output=True,
        text=True,
        timeout=duration * 4 + 30,
    )
    sent = json.loads(tx.stdout.strip().splitlines()[-1])["sent"]
    result = _finish_receiver(rx)
    return Run(rate, sent, result["received"], result["p50_ms"], result["p99_ms"], _achieved(result, result["received"]))


def _cli(*args: str) -> list[str]:
    return [PY, "-m", "hub.cli", *args]


def start_hub(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "hub.yaml"
    config.write_text(
        f"host:\n  host_id: bench\n  reorder_timeout_ms: 2000\n  diagnostics_interval_s: 2\n"
        f"state_dir: {workdir / 'hub-state'}\nlog_level: WARNING\n"
    )
    hub = subprocess.Popen(_cli("run", "-c", str(config), "--broker", f"mqtt://127.0.0.1:{port}"), cwd=workdir)
    # The hub is ready when its STATE online is retained on the broker.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["mosquitto_sub", "-p", str(port), "-t", "spBv1.0/STATE/bench", "-C", "1", "-W", "1"],
            capture_output=True,
            text=True,
        )
        if '"online": true' in probe.stdout or '"online":true' in probe.stdout:
            return hub
        if hub.poll() is not None:
            raise RuntimeError(f"hub exited with {hub.returncode}")
    raise RuntimeError("hub did not publish STATE online within 30 s")


def end_to_end(port: int, hub: subprocess.Popen[bytes], rate: float, duration: float, workdir: Path, run_no: int) -> Run:
    """Simulated edge nodes -> Mosquitto -> hub -> UNS mirror -> paho subscriber."""
    group = f"bench{run_no}"
    hz = rate / PER_TICK
    # Births mirror one message per device metric too; the receiver counts device metrics only.
    expected_births = PER_TICK
    expected = int(PER_TICK * hz * duration) + expected_births
    rx = _start_receiver(port, f"uns/{group}/+/+/+", expected, must_contain=DEVICE_METRIC_MARK)
    proc = psutil.Process(hub.pid)
    cpu_before = proc.cpu_times()
    wall_before = time.monotonic()
    sim = subprocess.run(
        _cli(
            "sparkplug", "simulate", "--broker", f"mqtt://127.0.0.1:{port}", "--group", group,
            "--nodes", str(NODES), "--devices", str(DEVICES), "--metrics", str(METRICS), "--rate", f"{hz:.6f}",
            "--duration", str(duration), "--host-id", "bench", "--state-dir", str(workdir / "sim-state"), "--json",
        ),
        capture_output=True,
        text=True,
        timeout=duration * 4 + 60,
        cwd=workdir,
    )
    if sim.returncode != 0:
        raise RuntimeError(f"simulator failed: {sim.stderr[-2000:]}")
    stats = json.loads(sim.stdout.strip().splitlines()[-1])
    result = _finish_receiver(rx)
    cpu_after = proc.cpu_times()
    wall = time.monotonic() - wall_before
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall * 100
    sent = stats["metric_updates"] + stats.get("birth_metrics", expected_births)
    return Run(rate, sent, result["received"], result["p50_ms"], result["p99_ms"], _achieved(result, result["received"]), cpu)


def decode_only(seconds: float = 3.0) -> float:
    """Host decode + sample building, no network, one core: metrics/s."""
    from bench.decode_only import measure

    return measure(seconds)


def _fmt(run: Run) -> str:
    cpu = f", hub CPU {run.hub_cpu:.0f}%" if run.hub_cpu is not None else ""
    return (
        f"offered {run.offered:>8,.0f}/s  sent {run.sent:>9,}  received {run.received:>9,}  "
        f"achieved {run.achieved:>8,.0f}/s  p50 {run.p50_ms} ms  p99 {run.p99_ms} ms{cpu}  "
        f"{'OK' if run.sustained else 'NOT SUSTAINED'}"
    )


def ladder(measure, rates: list[float]) -> tuple[list[Run], Run | None]:  # type: ignore[no-untyped-def]
    runs: list[Run] = []
    best = None
    for rate in rates:
        run = measure(rate)
        runs.append(run)
        print("   " + _fmt(run), flush=True)
        if not run.sustained:
            break
        best = run
    return runs, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load step")
    parser.add_argument("--rates", default="5000,10000,20000,25000,30000,40000,50000")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    print(f"Plantbus benchmark on {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB", flush=True)

    print("\n1. decode only (host decode + samples, one core, no network)", flush=True)
    decode_rate = decode_only()
    print(f"   {decode_rate:,.0f} metrics/s", flush=True)

    with tempfile.TemporaryDirectory(prefix="plantbus-bench-") as tmp:
        workdir = Path(tmp)
        with LocalMosquitto(workdir=workdir / "mosquitto", base_conf=ROOT / "mosquitto/dev.conf") as broker:
            print(f"\n2. raw broker ceiling: paho publish -> Mosquitto -> paho subscribe ({args.duration:.0f} s steps)", flush=True)
            raw_runs, raw_best = ladder(lambda r: raw_broker(broker.port, r, args.duration), rates + [60000, 80000])

            print(f"\n3. end to end: simulate -> Mosquitto -> hub (decode + UNS mirror) -> subscriber ({args.duration:.0f} s steps)", flush=True)
            hub = start_hub(broker.port, workdir)
            counter = iter(range(1000))
            try:
                e2e_runs, e2e_best = ladder(
                    lambda r: end_to_end(broker.port, hub, r, args.duration, workdir, next(counter)), rates
                )
            finally:
                hub.terminate()
                hub.wait(10)

    at_10k = next((r for r in e2e_runs if r.offered == 10000), None)
    print("\nSummary", flush=True)
    top = e2e_best.offered if e2e_best else 0
    raw_top = raw_best.offered if raw_best else 0
    print(f"   end to end, zero loss:      {top:,.0f} metric updates/s   (target >= 20,000)")
    if at_10k:
        print(f"   latency at 10,000/s:        p50 {at_10k.p50_ms} ms, p99 {at_10k.p99_ms} ms   (target p99 < 100 ms)")
    if e2e_best:
        print(f"   latency at {top:,.0f}/s:       p50 {e2e_best.p50_ms} ms, p99 {e2e_best.p99_ms} ms")
        print(f"   hub CPU at {top:,.0f}/s:       {e2e_best.hub_cpu:.0f}% of one core")
    print(f"   raw broker ceiling (paho):  {raw_top:,.0f} messages/s sustained; hub / raw = {top / raw_top if raw_top else 0:.2f}")
    print(f"   decode only, one core:      {decode_rate:,.0f} metrics/s")
    print("   peer for scale: United Manufacturing Hub sizes 2 vCPU for about 900 tags/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
