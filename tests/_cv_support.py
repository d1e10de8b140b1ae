"""Helpers for the edge_cv runtime tests: an MJPEG-over-HTTP camera in a subprocess (killable, restartable on its
port, readable by cv2.VideoCapture through FFmpeg), small video files, and a sink that records pipeline output.

Run as a script it is the camera: `python tests/_cv_support.py PORT [--fps F] [--width W] [--height H]`; it prints
READY once it listens and serves `multipart/x-mixed-replace` JPEGs on any path until killed.
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from _process_support import kill_process, start_ready_process

SCRIPT = Path(__file__).resolve()
BOUNDARY = "plantbusframe"


def numbered_frame(index: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A BGR picture that shows its index (as digits and as a moving bar), so frames differ."""
    image = np.full((height, width, 3), 40, np.uint8)
    x = (index * 7) % max(1, width - 20)
    image[height // 2 :, x : x + 20] = (0, 200, 255)
    cv2.putText(image, str(index), (10, height // 3), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return image


def write_video(path: Path, frames: int, fps: float = 25.0, size: tuple[int, int] = (320, 240)) -> Path:
    """An MJPEG AVI of numbered frames (the codec every OpenCV/FFmpeg build can write and read)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for i in range(frames):
        writer.write(numbered_frame(i, *size))
    writer.release()
    return path


class MjpegCamera:
    """This file run as an HTTP MJPEG camera in a subprocess; `kill()` is a crash, `start()` again keeps the port."""

    def __init__(
        self, port: int, fps: float = 25.0, size: tuple[int, int] = (320, 240), stall_after: int | None = None
    ) -> None:
        self.port = port
        self.fps = fps
        self.size = size
        self.stall_after = stall_after
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self, timeout: float = 15.0) -> None:
        """Start serving and return once the port listens."""
        self.proc = start_ready_process([str(SCRIPT), str(self.port), "--fps", str(self.fps),
             "--width", str(self.size[0]), "--height", str(self.size[1]),
             *(["--stall-after", str(self.stall_after)] if self.stall_after is not None else [])], "MJPEG test camera", timeout)

    def kill(self) -> None:
        """Kill the server process (its connections close as in a crash or a cable pulled at the switch)."""
        kill_process(self.proc)
        self.proc = None


def colour_classifier(path: Path, labels: tuple[str, str] = ("ok", "defective")) -> Path:
    """A real ONNX crop classifier [N,3,16,16] → softmax [N,2]: the second label wins where red beats blue."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[0.0, 20.0], [0.0, 0.0], [0.0, -20.0]], np.float32)  # input is RGB/255
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "colour_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.metadata_props.append(onnx.StringStringEntryProto(key="names", value=str(list(labels))))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; returns its last verdict."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class RecordingSink:
    """A pipeline sink that keeps everything it is given (thread-safe: pipelines call it from their threads)."""

    def __init__(self) -> None:
        self.outputs: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, output: Any) -> None:
        with self._lock:
            self.outputs.append(output)

    @property
    def events(self) -> list[Any]:
        with self._lock:
            return [e for o in self.outputs for e in o.events]


def _serve(port: int, fps: float, width: int, height: int, stall_after: int | None) -> None:
    import http.server

    interval = 1.0 / fps

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            index = 0
            start = time.monotonic()
            try:
                while True:
                    if stall_after is not None and index >= stall_after:
                        time.sleep(1.0)  # a camera that hangs: connection open, no more pictures
                        continue
                    ok, jpeg = cv2.imencode(".jpg", numbered_frame(index, width, height))
                    assert ok
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                    self.wfile.write(head.encode() + jpeg.tobytes() + b"\r\n")
                    index += 1
                    time.sleep(max(0.0, start + index * interval - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="an MJPEG-over-HTTP test camera")
    parser.add_argument("port", type=int)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--stall-after", type=int, default=None, help="stop sending after this many frames")
    args = parser.parse_args()
    _serve(args.port, args.fps, args.width, args.height, args.stall_after)
