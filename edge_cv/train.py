"""`plantbus cv train`: train a crop classifier or a small detector on a folder of labelled images and export ONNX
in the formats the pipeline reads, plus `export_scene_dataset`, which writes such folders from the synthetic scenes.

Folder formats (the common ones, so a plant can label its own footage with usual tools):
- classifier: one sub-folder per class (`ok/`, `defective/`), images inside; classes are the sorted folder names.
- detector: `images/*.jpg|png` and `labels/<same stem>.txt` in YOLO format (`class cx cy w h`, normalised to the
  image), class names one per line in `classes.txt`.

Exported models:
- classifier: input `images` [N,3,H,W] RGB/255, the crop resized to W×H (stretched, no letterbox); output `probs`
  [N,K] softmax. Labels are in the ONNX metadata (`names`, JSON list) and the model card.
- detector: the Ultralytics YOLOv8 export format — input `images` [1,3,S,S] RGB/255 letterboxed with grey 114;
  output `output0` [1,4+C,N] = cx,cy,w,h in input pixels then C sigmoid class scores, no objectness; NMS is the
  caller's. An anchor-free head, one prediction per cell on strides 16 and 32.

torch is an optional extra (`pip install plantbus[train]`, the local CPU wheel torch==2.13.0); it is imported only
inside the training functions. Training is seeded and single-process: the same data, seed, torch version and thread
count give the same weights."""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from hub.errors import PlantbusError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DETECTOR_CLASSES = ("person", "product")
LETTERBOX_GREY = 114


class TrainError(PlantbusError):
    """Training cannot run: torch missing, or the data folder is not in the expected shape."""


@dataclass(slots=True)
class TrainResult:
    """What a training run produced and how well it did on its held-out split."""

    out: Path
    classes: tuple[str, ...]
    train_samples: int
    val_samples: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise TrainError(
            "plantbus cv train needs torch: install the extra with `pip install 'plantbus[train]'` "
            "(torch==2.13.0, the CPU wheel; do not add torchvision)"
        ) from exc
    return torch


# ---- data -----------------------------------------------------------------------------------------------------

def export_scene_dataset(
    spec: Any,
    folder: str | Path,
    task: Literal["detect", "product", "mask"],
    *,
    every: int = 1,
    max_side: int = 640,
    prefix: str | None = None,
) -> int:
    """Write frames of a synthetic scene as a labelled folder for `train_detector` ("detect") or crops for
    `train_classifier` ("product": ok/defective, "mask": mask/no_mask); returns how many samples were written.
    Files are named `<kind>-<line>-s<seed>-f<frame>…`; pass `prefix` to put two scenes that share kind, line and
    seed into one folder."""
    from edge_cv.scenes import Scene

    folder = Path(folder)
    scene = Scene(spec)
    stem = prefix or f"{spec.kind}-{spec.line}-s{spec.seed}"
    if folder.is_dir() and any(folder.glob(f"*/{stem}-f*")):
        raise TrainError(f"{folder} already holds samples named {stem}-…; pass prefix= to keep both scenes")
    n = 0
    if task == "detect":
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "classes.txt").write_text("\n".join(DETECTOR_CLASSES) + "\n")
    for i in range(0, spec.frame_count, every):
        frame = scene.frame(i)
        img, truth = frame.image, frame.truth
        h, w = img.shape[:2]
        name = f"{stem}-f{i:05d}"
        if task == "detect":
            rows = []
            objects = [(0, p.box, p.visible) for p in truth.people] + [(1, p.box, p.visible) for p in truth.products]
            for cls, (x0, y0, x1, y1), vis in objects:
                if vis < 0.25:  # slivers at the frame edge teach nothing
                    continue
                cx, cy, bw, bh = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h
                rows.append(f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
            k = min(1.0, max_side / max(h, w))
            small = cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA) if k < 1 else img
            cv2.imwrite(str(folder / "images" / f"{name}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 92])
            (folder / "labels" / f"{name}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
            n += 1
            continue
        rng = np.random.default_rng([spec.seed, 11, i])
        if task == "product":
            items = [(p.id, p.box, "defective" if p.defective else "ok") for p in truth.products if p.visible >= 1.0]
        else:
            items = []
            for p in truth.people:
                if p.visible < 1.0 or _occluded(p, truth.people):
                    continue
                items.append((p.id, p.box, "mask" if p.mask else "no_mask"))
        for oid, box, label in items:
            crop = _crop(img, _jitter(box, rng, w, h))
            if crop is None:
                continue
            (folder / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / label / f"{name}-o{oid}.png"), crop)
            n += 1
    return n


def _occluded(person: Any, people: Any) -> bool:
    """Another person overlaps this one's head and shoulders: its crop would show the wrong face."""
    x0, y0, x1, y1 = person.box
    head = (x0, y0, x1, y0 + 0.3 * (y1 - y0))
    for other in people:
        if other.id == person.id:
            continue
        ox0, oy0, ox1, oy1 = other.box
        ix = max(0.0, min(head[2], ox1) - max(head[0], ox0))
        iy = max(0.0, min(head[3], oy1) - max(head[1], oy0))
        if ix * iy > 0.05 * (head[2] - head[0]) * (head[3] - head[1]):
            return True
    return False


def _jitter(box, rng: np.random.Generator, w: int, h: int):
    """A box as a detector might give it: edges off by up to 5 % of the size."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    d = rng.uniform(-0.05, 0.05, 4)
    return (max(0, x0 + d[0] * bw), max(0, y0 + d[1] * bh), min(w, x1 + d[2] * bw), min(h, y1 + d[3] * bh))


def _crop(img: np.ndarray, box) -> np.ndarray | None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return img[y0:y1, x0:x1]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return order[n_val:], order[:n_val]


def preprocess_crop(crop_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A BGR crop as the exported classifiers take it: resized to (height, width), RGB/255, [1,3,H,W] float32."""
    h, w = size
    x = cv2.resize(crop_bgr, (w, h), interpolation=cv2.INTER_AREA)
    return (x[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0).copy()


def letterbox(img_bgr: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping aspect into a size×size grey-114 square; returns (BGR image, scale, (pad_x, pad_y))."""
    h, w = img_bgr.shape[:2]
    k = min(size / h, size / w)
    nw, nh = round(w * k), round(h * k)
    out = np.full((size, size, 3), LETTERBOX_GREY, np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    out[py : py + nh, px : px + nw] = cv2.resize(img_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    return out, k, (px, py)


# ---- models ---------------------------------------------------------------------------------------------------

def _classifier_net(torch: Any, k: int) -> Any:
    nn = torch.nn

    class CropNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            def conv(i: int, o: int) -> list[Any]:
                return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

            self.features = nn.Sequential(
                *conv(3, 16), nn.MaxPool2d(2), *conv(16, 32), nn.MaxPool2d(2), *conv(32, 48), nn.MaxPool2d(2),
                *conv(48, 64),
            )
            self.head = nn.Linear(64, k)

        def forward(self, x: Any) -> Any:
            x = self.features(x).mean(dim=(2, 3))
            return self.head(x)

    return CropNet()


def _detector_net(torch: Any, c: int, size: int) -> Any:
    nn = torch.nn

    def block(i: int, o: int, s: int) -> Any:
        return nn.Sequential(nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    class GridDetector(nn.Module):
        """A small CNN with a feature-pyramid step and one box + class scores per cell at strides 16 and 32."""

        strides = (16, 32)

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(block(3, 8, 2), block(8, 16, 2), block(16, 24, 2), block(24, 32, 1))
            self.c4 = nn.Sequential(block(32, 48, 2), block(48, 48, 1))
            self.c5 = nn.Sequential(block(48, 64, 2), block(64, 64, 1))
            self.lat5 = nn.Conv2d(64, 48, 1)
            self.p4 = block(48, 48, 1)
            self.head4 = nn.Conv2d(48, 4 + c, 1)
            self.head5 = nn.Conv2d(64, 4 + c, 1)
            self.size = size
            for s in self.strides:
                n = size // s
                gy, gx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                                        indexing="ij")
                self.register_buffer(f"grid{s}", torch.stack([gx, gy]).reshape(1, 2, -1), persistent=False)

        def raw(self, x: Any) -> list[Any]:
            """Per-level raw maps [B, 4+C, cells]."""
            f4 = self.c4(self.stem(x))
            f5 = self.c5(f4)
            up = nn.functional.interpolate(self.lat5(f5), scale_factor=2.0, mode="nearest")
            p4 = self.p4(f4 + up)
            return [self.head4(p4).flatten(2), self.head5(f5).flatten(2)]

        def decode(self, maps: list[Any]) -> Any:
            """Raw maps → [B, 4+C, N]: centre offset in [-0.5, 1.5] cells, size 4·stride·exp(t), sigmoid scores."""
            out = []
            for m, s in zip(maps, self.strides):
                grid = getattr(self, f"grid{s}")
                xy = (grid + torch.sigmoid(m[:, 0:2]) * 2.0 - 0.5) * s
                wh = torch.exp(torch.clamp(m[:, 2:4], -6.0, 4.0)) * (4.0 * s)
                out.append(torch.cat([xy, wh, torch.sigmoid(m[:, 4:])], dim=1))
            return torch.cat(out, dim=2)

        def forward(self, x: Any) -> Any:
            return self.decode(self.raw(x))

    return GridDetector()


def _export(torch: Any, model: Any, example: Any, out: Path, input_names, output_names, dynamic: dict | None,
            metadata: dict[str, str]) -> None:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, but unlike the dynamo one it needs no onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(out), dynamo=False, opset_version=17, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic, do_constant_folding=True)
    proto = onnx.load(str(out))
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "plantbus"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model(example).numpy()
    got = session.run(None, {input_names[0]: example.numpy()})[0]
    # Scores must agree within 1e-4; box coordinates are pixels (up to thousands), so they get a relative margin
    # for float32 rounding on top.
    err = np.abs(got - want) - 1e-5 * np.abs(want)
    if float(err.max()) > 1e-4:
        raise TrainError(f"exported {out} differs from the trained model by {float(err.max()):.2e} (limit 1e-4)")


def _recalibrate_batchnorm(torch: Any, model: Any, batches: Any) -> None:
    """Replace BatchNorm running statistics by exact averages over the training data: after short training runs the
    moving averages lag the weights, and the exported (eval-mode) model would see the wrong statistics."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.eval()


def _seed(torch: Any, seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


# ---- classifier -----------------------------------------------------------------------------------------------

def train_classifier(
    folder: str | Path,
    out_onnx: str | Path,
    *,
    input_size: tuple[int, int] = (64, 64),
    epochs: int = 12,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    val_fraction: float = 0.15,
    threads: int = 1,
    description: str = "",
) -> TrainResult:
    """Train a crop classifier on `folder/<class>/*.png|jpg` and export it to `out_onnx`; input_size is (H, W)."""
    torch = _torch()
    started = time.perf_counter()
    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _images(p)) if folder.is_dir() else []
    if len(classes) < 2:
        raise TrainError(f"{folder} needs one sub-folder of images per class, at least two classes; found {classes}")
    xs, ys = [], []
    for k, name in enumerate(classes):
        for path in _images(folder / name):
            img = cv2.imread(str(path))
            if img is None:
                raise TrainError(f"cannot read image {path} — remove it or convert it to PNG/JPEG")
            xs.append(preprocess_crop(img, input_size)[0])
            ys.append(k)
    x_all = torch.from_numpy(np.stack(xs))
    y_all = torch.tensor(ys, dtype=torch.long)
    train_idx, val_idx = _split(len(ys), val_fraction, seed)
    _seed(torch, seed, threads)
    model = _classifier_net(torch, len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train_idx) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps))
    counts = np.bincount(np.array(ys)[train_idx], minlength=len(classes)).astype(np.float32)
    weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes))  # rare classes (defects) count more
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    gen = torch.Generator().manual_seed(seed)
    tr = torch.tensor(train_idx)
    for _ in range(epochs):
        model.train()
        for b in tr[torch.randperm(len(tr), generator=gen)].split(batch):
            x = x_all[b]
            # Light augmentation: brightness/contrast like lighting drift, mirror images.
            gain = 1.0 + (torch.rand(len(b), 1, 1, 1, generator=gen) - 0.5) * 0.3
            x = torch.clamp(x * gain + (torch.rand(len(b), 1, 1, 1, generator=gen) - 0.5) * 0.1, 0, 1)
            flip = torch.rand(len(b), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = loss_fn(model(x), y_all[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    _recalibrate_batchnorm(torch, model, (x_all[b] for b in tr.split(batch)))

    class WithSoftmax(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return torch.softmax(self.net(x), dim=1)

    exported = WithSoftmax(model).eval()
    metrics: dict[str, float] = {}
    if val_idx:
        with torch.no_grad():
            pred = exported(x_all[val_idx]).argmax(1)
        metrics["val_accuracy"] = float((pred == y_all[val_idx]).float().mean())
    out = Path(out_onnx)
    meta = {"names": json.dumps(classes), "task": "classify", "imgsz": json.dumps(list(input_size)),
            "preprocess": "RGB/255, crop resized to WxH (no letterbox)", "description": description}
    _export(torch, exported, x_all[:1].clone(), out, ["images"], ["probs"],
            {"images": {0: "batch"}, "probs": {0: "batch"}}, meta)
    return TrainResult(out, tuple(classes), len(train_idx), len(val_idx), time.perf_counter() - started, metrics)


# ---- detector -------------------------------------------------------------------------------------------------

def _load_detection_folder(folder: Path, size: int) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    classes_file = folder / "classes.txt"
    if not classes_file.exists():
        raise TrainError(f"{folder} needs classes.txt (one class name per line) beside images/ and labels/")
    classes = [c.strip() for c in classes_file.read_text().splitlines() if c.strip()]
    paths = _images(folder / "images") if (folder / "images").is_dir() else []
    if not paths:
        raise TrainError(f"{folder}/images holds no images")
    imgs, labels = [], []
    for path in paths:
        img = cv2.imread(str(path))
        if img is None:
            raise TrainError(f"cannot read image {path}")
        boxed, k, (px, py) = letterbox(img, size)
        h, w = img.shape[:2]
        rows = []
        label_file = folder / "labels" / f"{path.stem}.txt"
        if label_file.exists():
            for ln, line in enumerate(label_file.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 5 or not parts[0].isdigit() or int(parts[0]) >= len(classes):
                    raise TrainError(f"{label_file}:{ln}: expected 'class cx cy w h' with class < {len(classes)}")
                c, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:])
                # to letterboxed input pixels, as x0,y0,x1,y1
                rows.append([c, (cx - bw / 2) * w * k + px, (cy - bh / 2) * h * k + py,
                             (cx + bw / 2) * w * k + px, (cy + bh / 2) * h * k + py])
        imgs.append(boxed[:, :, ::-1].transpose(2, 0, 1).copy())
        labels.append(np.array(rows, np.float32).reshape(-1, 5))
    return classes, np.stack(imgs), labels


def _targets(torch: Any, labels: list[np.ndarray], size: int, strides: tuple[int, ...], c: int):
    """Per image and level: which cells are positive, their class and box target. A box is assigned to a level
    when its longer side is within 0.25..4 × the level's base size (4·stride), to its centre cell and to
    neighbours whose centre lies within the box and within 1.5 cells of the box centre."""
    n_cells = [(size // s) ** 2 for s in strides]
    total = sum(n_cells)
    cls_t = np.zeros((len(labels), c, total), np.float32)
    box_t = np.zeros((len(labels), 4, total), np.float32)
    pos = np.zeros((len(labels), total), bool)
    for i, rows in enumerate(labels):
        offset = 0
        for s, nc in zip(strides, n_cells):
            n = size // s
            # Where boxes share a cell the last one written wins: go back to front (by bottom edge) so the cell
            # describes the object in front, the one actually visible there.
            for cls, x0, y0, x1, y1 in sorted(rows.tolist(), key=lambda r: r[4]):
                bw, bh = x1 - x0, y1 - y0
                r = max(bw, bh) / (4 * s)
                if not 0.25 <= r <= 4:
                    continue
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                gx, gy = int(cx // s), int(cy // s)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ix, iy = gx + dx, gy + dy
                        if not (0 <= ix < n and 0 <= iy < n):
                            continue
                        ccx, ccy = (ix + 0.5) * s, (iy + 0.5) * s
                        if (dx or dy) and not (x0 < ccx < x1 and y0 < ccy < y1 and abs(ccx - cx) < 1.5 * s
                                               and abs(ccy - cy) < 1.5 * s):
                            continue
                        j = offset + iy * n + ix
                        pos[i, j] = True
                        cls_t[i, int(cls), j] = 1.0
                        box_t[i, :, j] = (cx, cy, bw, bh)
            offset += nc
    return torch.from_numpy(cls_t), torch.from_numpy(box_t), torch.from_numpy(pos)


def train_detector(
    folder: str | Path,
    out_onnx: str | Path,
    *,
    imgsz: int = 320,
    epochs: int = 30,
    batch: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    val_fraction: float = 0.15,
    threads: int = 1,
    description: str = "",
) -> TrainResult:
    """Train the grid detector on `folder/images` + `folder/labels` (YOLO txt) and export it in the YOLOv8 format."""
    torch = _torch()
    started = time.perf_counter()
    folder = Path(folder)
    if imgsz % 32:
        raise TrainError(f"imgsz must be a multiple of 32, got {imgsz}")
    classes, imgs, labels = _load_detection_folder(folder, imgsz)
    train_idx, val_idx = _split(len(imgs), val_fraction, seed)
    _seed(torch, seed, threads)
    model = _detector_net(torch, len(classes), imgsz)
    cls_t, box_t, pos = _targets(torch, labels, imgsz, model.strides, len(classes))
    x_all = torch.from_numpy(imgs)
    stride_of = torch.cat([torch.full(((imgsz // s) ** 2,), float(s)) for s in model.strides])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train_idx) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    tr = torch.tensor(train_idx)
    bce = torch.nn.BCEWithLogitsLoss(reduction="sum")
    for _ in range(epochs):
        model.train()
        for b in tr[torch.randperm(len(tr), generator=gen)].split(batch):
            x = x_all[b].float() / 255.0
            gain = 1.0 + (torch.rand(len(b), 1, 1, 1, generator=gen) - 0.5) * 0.3
            x = torch.clamp(x * gain, 0, 1)
            ct, bt, p = cls_t[b], box_t[b].clone(), pos[b]
            flip = torch.rand(len(b), generator=gen) < 0.5
            if flip.any():
                # Mirroring moves a box to the mirrored cell: flip the cell grid per level along with the image.
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
                ct, bt, p = _flip_targets(torch, ct, bt, p, flip, imgsz, model.strides)
            maps = model.raw(x)
            raw = torch.cat(maps, dim=2)
            n_pos = max(1, int(p.sum()))
            loss_cls = bce(raw[:, 4:], ct) / n_pos
            dec = model.decode(maps)
            pb = dec[:, :4].permute(0, 2, 1)[p]
            tb = bt.permute(0, 2, 1)[p]
            s = stride_of.expand(len(b), -1)[p][:, None]
            loss_xy = (torch.abs(pb[:, :2] - tb[:, :2]) / s).sum() / n_pos
            loss_wh = torch.abs(torch.log(pb[:, 2:] / tb[:, 2:].clamp(min=1.0))).sum() / n_pos
            loss_iou = (1.0 - _giou(torch, pb, tb)).sum() / n_pos
            loss = loss_cls + loss_xy + loss_wh + 2.0 * loss_iou
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    _recalibrate_batchnorm(torch, model, (x_all[b].float() / 255.0 for b in tr.split(batch)))
    out = Path(out_onnx)
    names = {i: n for i, n in enumerate(classes)}
    meta = {"names": str(names), "task": "detect", "imgsz": json.dumps([imgsz, imgsz]), "stride": "32",
            "format": "ultralytics-yolov8 (cx,cy,w,h + sigmoid class scores, no objectness)",
            "description": description}
    _export(torch, model, x_all[:1].float() / 255.0, out, ["images"], ["output0"], None, meta)
    metrics: dict[str, float] = {}
    if val_idx:
        metrics = evaluate_detector(out, x_all[val_idx].numpy(), [labels[i] for i in val_idx], len(classes))
    return TrainResult(out, tuple(classes), len(train_idx), len(val_idx), time.perf_counter() - started, metrics)


def _flip_targets(torch: Any, ct, bt, p, flip, size: int, strides):
    ct, bt, p = ct.clone(), bt.clone(), p.clone()
    offset = 0
    for s in strides:
        n = size // s
        sl = slice(offset, offset + n * n)
        for arr in (ct, bt):
            part = arr[flip, :, sl].reshape(int(flip.sum()), arr.shape[1], n, n).flip(3)
            arr[flip, :, sl] = part.reshape(int(flip.sum()), arr.shape[1], n * n)
        pp = p[flip, sl].reshape(-1, n, n).flip(2)
        p[flip, sl] = pp.reshape(-1, n * n)
        offset += n * n
    bt[flip, 0] = torch.where(p[flip], size - bt[flip, 0], bt[flip, 0])
    return ct, bt, p


def _giou(torch: Any, a, b):
    ax0, ay0, ax1, ay1 = a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2, a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2
    bx0, by0, bx1, by1 = b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    iw = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp(min=0)
    ih = (torch.minimum(ay1, by1) - torch.maximum(ay0, by0)).clamp(min=0)
    inter = iw * ih
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    cw = torch.maximum(ax1, bx1) - torch.minimum(ax0, bx0)
    chh = torch.maximum(ay1, by1) - torch.minimum(ay0, by0)
    hull = cw * chh + 1e-6
    iou = inter / (union + 1e-6)
    return iou - (hull - union) / hull


# ---- evaluation (onnxruntime only, no torch) ------------------------------------------------------------------

def decode_yolo(output: np.ndarray, conf: float = 0.4, iou: float = 0.5) -> list[tuple[int, float, np.ndarray]]:
    """Decode one [1,4+C,N] YOLOv8-format output into (class, score, x0y0x1y1 box) after class-wise NMS. A minimal
    reference decoder for evaluation; the pipeline's own is edge_cv/detectors/yolo.py."""
    pred = output[0].T
    boxes = np.concatenate([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], axis=1)
    scores = pred[:, 4:]
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    keep = best >= conf
    out = []
    for c in np.unique(cls[keep]):
        idx = np.where(keep & (cls == c))[0]
        b = boxes[idx]
        sel = cv2.dnn.NMSBoxes([[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in b],
                               best[idx].tolist(), conf, iou)
        for j in np.array(sel).reshape(-1):
            out.append((int(c), float(best[idx[j]]), b[j]))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def evaluate_detector(model: str | Path, images_chw: np.ndarray, labels: list[np.ndarray], n_classes: int,
                      conf: float = 0.4, iou_match: float = 0.5) -> dict[str, float]:
    """Precision, recall and AP50 per class of an exported detector on letterboxed uint8 [N,3,S,S] RGB images with
    labels as (class, x0, y0, x1, y1) in input pixels. AP is the area under the precision–recall curve
    (all-point interpolation) of detections above conf 0.05."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    per_class: dict[int, list[tuple[float, bool]]] = {c: [] for c in range(n_classes)}
    n_gt = {c: 0 for c in range(n_classes)}
    tp_at = {c: 0 for c in range(n_classes)}
    fp_at = {c: 0 for c in range(n_classes)}
    for img, rows in zip(images_chw, labels):
        out = session.run(None, {name: (img[None].astype(np.float32) / 255.0)})[0]
        dets = decode_yolo(out, conf=0.05)
        for c in range(n_classes):
            gts = [r[1:] for r in rows if int(r[0]) == c]
            n_gt[c] += len(gts)
            used = [False] * len(gts)
            for _, score, box in sorted((d for d in dets if d[0] == c), key=lambda d: -d[1]):
                ious = [_iou(box, g) if not used[k] else 0.0 for k, g in enumerate(gts)]
                k = int(np.argmax(ious)) if ious else -1
                hit = k >= 0 and ious[k] >= iou_match
                if hit:
                    used[k] = True
                per_class[c].append((score, hit))
                if score >= conf:
                    tp_at[c] += hit
                    fp_at[c] += not hit
    metrics: dict[str, float] = {}
    for c in range(n_classes):
        ranked = sorted(per_class[c], key=lambda d: -d[0])
        tps = np.cumsum([h for _, h in ranked]) if ranked else np.zeros(0)
        recall = tps / max(1, n_gt[c])
        precision = tps / np.arange(1, len(ranked) + 1) if ranked else np.zeros(0)
        ap = 0.0
        if len(ranked):
            mrec = np.concatenate([[0.0], recall, [1.0]])
            mpre = np.concatenate([[1.0], precision, [0.0]])
            mpre = np.maximum.accumulate(mpre[::-1])[::-1]
            ap = float(np.sum((mrec[1:] - mrec[:-1]) * mpre[1:]))
        metrics[f"ap50_{c}"] = ap
        metrics[f"precision_{c}"] = float(tp_at[c] / max(1, tp_at[c] + fp_at[c]))
        metrics[f"recall_{c}"] = float(tp_at[c] / max(1, n_gt[c]))
    metrics["map50"] = float(np.mean([metrics[f"ap50_{c}"] for c in range(n_classes)]))
    return metrics


def evaluate_classifier(model: str | Path, folder: str | Path) -> dict[str, float]:
    """Accuracy (overall and per class) of an exported classifier on a class-per-folder set, with onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["names"])
    h, w = session.get_inputs()[0].shape[2:]
    folder = Path(folder)
    metrics: dict[str, float] = {}
    right = total = 0
    for k, name in enumerate(classes):
        paths = _images(folder / name) if (folder / name).is_dir() else []
        ok = 0
        for path in paths:
            probs = session.run(None, {"images": preprocess_crop(cv2.imread(str(path)), (h, w))})[0]
            ok += int(probs[0].argmax() == k)
        metrics[f"accuracy_{name}"] = ok / max(1, len(paths))
        metrics[f"n_{name}"] = float(len(paths))
        right += ok
        total += len(paths)
    metrics["accuracy"] = right / max(1, total)
    return metrics


def load_detection_set(folder: str | Path, imgsz: int) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """A detection folder as letterboxed uint8 [N,3,S,S] RGB images and labels in input pixels (for evaluation)."""
    return _load_detection_folder(Path(folder), imgsz)
