"""Speed of the frame path on each runtime: face detection, crop preprocessing, emotion classification, in total.

    python -m fer_core.bench --json bench.json [--weights weights] [--repeats 50] [--warmup 5] [--imgsz 320]
        [--threads 2] [--backends onnxruntime torch haar cuda] [--tta off|shipped]

Frames are synthetic but made of a real face: 640x480, with 1 or 5 copies of the astronaut's face from
`skimage.data` pasted at fixed places on seeded noise, so every run on every machine times the same pixels.
Preprocessing and classification run on the pasted faces' boxes, so "faces_5" always means five faces classified,
whatever the detector returns. Without `weights/face_yolo.pt` the detector is an untrained YOLO11n stand-in (same
architecture, same cost; its detections are meaningless), and the output says so. All runtimes are timed in the
same process with `time.perf_counter`; medians and 90th percentiles are reported because the first calls and
background load make the mean drift. The detector input size defaults to the live-video one (`VIDEO_IMGSZ`),
since this is the per-frame path of the webcam and video pages, and TTA is off as on the webcam page;
`--imgsz 640 --tta shipped` times the photo setting.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_core import cli, onnx_session
from fer_core.classifier import prepare_batch
from fer_core.detection import DETECTOR_FILE, VIDEO_IMGSZ, FaceDetector
from fer_core.ensemble import Ensemble
from fer_core.pipeline import DEFAULT_WEIGHTS, FACE_MARGIN, Box, crop_faces

#: The astronaut's face in `skimage.data.astronaut()` (x1, y1, x2, y2): hairline to chin, ear to ear.
ASTRONAUT_FACE = (175.0, 62.0, 272.0, 165.0)
#: Context kept around the face in each pasted copy, as a fraction of the face size per side.
PATCH_MARGIN = 0.3
FRAME_HEIGHT, FRAME_WIDTH = 480, 640
#: Pasted copies per frame: (centre x, centre y, patch side in px); they fit in the frame and never overlap.
LAYOUTS: dict[int, tuple[tuple[int, int, int], ...]] = {
    1: ((320, 240, 200),),
    5: ((120, 130, 150), (320, 130, 140), (520, 130, 130), (215, 345, 120), (425, 345, 110)),
}
STAGES = ("detect", "preprocess", "classify", "total")


@dataclass(frozen=True)
class Backend:
    """One row of the table: which detector and runtimes run the frame path, on which device."""

    name: str
    detector: str
    runtime: str
    device: str


BACKENDS = {
    "onnxruntime": Backend("onnxruntime", "yolo", "onnxruntime", "cpu"),
    "torch": Backend("torch", "yolo", "torch", "cpu"),
    "cuda": Backend("cuda", "yolo", "torch", "cuda"),
    "haar": Backend("haar", "haar", "onnxruntime", "cpu"),
}


def face_patch(side: int) -> tuple[np.ndarray, Box]:
    """A square side x side RGB crop of the astronaut's face with margin, and the face box inside it."""
    from skimage import data as skdata

    x1, y1, x2, y2 = ASTRONAUT_FACE
    size = max(x2 - x1, y2 - y1) * (1 + 2 * PATCH_MARGIN)
    left, top = round((x1 + x2 - size) / 2), round((y1 + y2 - size) / 2)
    size = round(size)
    crop = skdata.astronaut()[top : top + size, left : left + size]
    scale = side / size
    patch = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    return patch, ((x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale)


def synthetic_frame(n_faces: int, seed: int = 0) -> tuple[np.ndarray, list[Box]]:
    """A 640x480 RGB frame with `n_faces` pasted faces (a key of LAYOUTS) and their face boxes, deterministic."""
    if n_faces not in LAYOUTS:
        raise ValueError(f"n_faces must be one of {sorted(LAYOUTS)}, got {n_faces}")
    rng = np.random.default_rng(seed)
    noise = rng.normal(128, 30, (FRAME_HEIGHT, FRAME_WIDTH, 3)).astype(np.float32)
    frame = np.clip(cv2.GaussianBlur(noise, (0, 0), 3), 0, 255).astype(np.uint8)
    boxes: list[Box] = []
    for cx, cy, side in LAYOUTS[n_faces]:
        patch, (bx1, by1, bx2, by2) = face_patch(side)
        left, top = cx - side // 2, cy - side // 2
        frame[top : top + side, left : left + side] = patch
        boxes.append((left + bx1, top + by1, left + bx2, top + by2))
    return frame, boxes


def summarise(samples_ms: Sequence[float]) -> dict[str, float]:
    median, p90 = np.percentile(np.asarray(samples_ms, dtype=np.float64), [50, 90])
    return {"median": round(float(median), 3), "p90": round(float(p90), 3)}


def time_frame(
    detector: FaceDetector,
    ensemble: Ensemble,
    frame: np.ndarray,
    boxes: Sequence[Box],
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Per-stage timings of the frame path, as `Pipeline.analyse` runs it, on fixed face boxes."""
    size = ensemble.members[0].config.input_size
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    found: list[Any] = []
    for i in range(warmup + repeats):
        t0 = clock()
        found = detector.detect(frame)
        t1 = clock()
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        batch = prepare_batch(crop_faces(gray, boxes, FACE_MARGIN), size)
        t2 = clock()
        ensemble.predict_batch(batch)
        t3 = clock()
        if i >= warmup:
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                samples[stage].append(seconds * 1000)
    stages = {stage: summarise(values) for stage, values in samples.items()}
    total = stages["total"]["median"]
    return {
        "total_ms": total,
        "fps": round(1000 / total, 2) if total > 0 else None,
        "stages_ms": stages,
        "faces_classified": len(boxes),
        "faces_detected": len(found),
    }


def available_backends() -> list[str]:
    import torch

    return [name for name in BACKENDS if name != "cuda" or torch.cuda.is_available()]


def detector_weights(weights_dir: Path, explicit: Path | None) -> tuple[Path, bool]:
    """The detector to time and whether it is trained; builds (once, in the cache) an untrained stand-in if needed."""
    if explicit is not None:
        return explicit, True
    shipped = weights_dir / DETECTOR_FILE
    if shipped.is_file():
        return shipped, True
    from fer_core.export import cache_dir
    from fer_core.untrained_yolo import build_untrained_yolo

    stand_in = cache_dir() / "bench" / "untrained_yolo11n_face.pt"
    if not stand_in.is_file():  # kept, so its sha256 and therefore its cached ONNX export stay the same across runs
        patch, _ = face_patch(160)
        build_untrained_yolo(stand_in, images=[patch, synthetic_frame(5)[0]])
    return stand_in, False


def set_threads(n: int) -> None:
    """Give every runtime the same CPU threads, so the rows compare engines rather than thread counts."""
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    os.environ[onnx_session.THREADS_ENV] = str(n)  # read by every onnxruntime session opened after this


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    versions |= {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions["ultralytics"] = importlib.metadata.version("ultralytics")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "platform": platform.platform(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime_threads": onnx_session.threads() or "onnxruntime default (one per physical core)",
        "opencv_threads": cv2.getNumThreads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
    }


def run(
    weights_dir: Path,
    backends: Sequence[str],
    repeats: int,
    warmup: int,
    imgsz: int,
    detector_path: Path | None = None,
    log: Callable[[str], None] = print,
    threads: int = 0,
    tta: bool | None = False,
) -> dict[str, Any]:
    """Time every backend on the 1- and 5-face frames; returns the JSON report.

    `threads` (0: leave the libraries' defaults) is applied again right before each backend is timed, because
    loading models (ultralytics' device selection above all) may change the process-wide settings.
    `tta` False times the live-video path (the webcam page runs without TTA); None keeps `ensemble.json`'s
    TTA set (the photo path).
    """
    from fer_core.yolo_onnx import letterbox

    weights, trained = detector_weights(weights_dir, detector_path)
    note = None
    if not trained:
        note = (
            f"{weights_dir / 'face_yolo.pt'} not found: timing an untrained YOLO11n built from yolo11n.yaml "
            "(same architecture and cost; its detections are meaningless)"
        )
    if note:
        log(f"NOTE: {note}")
    frames = {n: synthetic_frame(n) for n in sorted(LAYOUTS)}
    ensembles: dict[tuple[str, str], Ensemble] = {}
    results: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for name in backends:
        backend = BACKENDS[name]
        key = (backend.runtime, backend.device)
        if key not in ensembles:
            loaded = Ensemble.load(weights_dir, runtime=backend.runtime, device=backend.device)
            ensembles[key] = loaded if tta is None else loaded.with_tta(tta)
        ensemble = ensembles[key]
        detector = FaceDetector(
            backend=backend.detector, weights=weights, imgsz=imgsz, runtime=backend.runtime, device=backend.device
        )
        problem = detector_mismatch(detector, backend)
        if problem:  # a fallback timed under this row's name would be a wrong figure
            info[name] = {"skipped": problem}
            log(f"NOT timing {name}: {problem}")
            continue
        info[name] = {
            "detector": detector.backend,
            "detector_runtime": detector.runtime,
            "classifier_runtime": sorted({m.runtime_name for m in ensemble.members}),
            "device": backend.device,
        }
        if threads:
            set_threads(threads)
        log(f"timing {name}: {info[name]}")
        results[name] = {
            f"faces_{n}": time_frame(detector, ensemble, frame, boxes, repeats, warmup)
            for n, (frame, boxes) in frames.items()
        }
    blob, _ = letterbox(frames[1][0], imgsz)
    members = next(iter(ensembles.values())).members if ensembles else []
    return {
        "results": results,
        "backends": info,
        "machine": machine_info(),
        "detector": {
            "weights": str(weights),
            "trained": trained,
            "note": note,
            "imgsz": imgsz,
            "network_input_hw": list(blob.shape[2:]),
        },
        "settings": {
            "frame_hw": [FRAME_HEIGHT, FRAME_WIDTH],
            "faces": sorted(LAYOUTS),
            "repeats": repeats,
            "warmup": warmup,
            "classifiers": [m.name for m in members],
            "tta": next(iter(ensembles.values())).tta if ensembles else None,
            "timer": "time.perf_counter",
        },
    }


def detector_mismatch(detector: FaceDetector, backend: Backend) -> str | None:
    """Why this detector is not the one the row names (the Haar fallback, or PyTorch for onnxruntime), if it is not."""
    if detector.backend != backend.detector:
        return f"the {backend.detector} detector did not load: {detector.warning}"
    if backend.detector == "yolo" and detector.runtime != backend.runtime:
        return f"the detector runs on {detector.runtime}, not {backend.runtime}: {detector.runtime_warning}"
    return None


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width table: median / p90 ms per stage, and FPS from the median total."""
    head = f"{'backend':<12} {'faces':>5}" + "".join(f" {s + ' ms':>17}" for s in STAGES) + f" {'FPS':>7}"
    lines = [head, "-" * len(head)]
    for name, by_faces in report["results"].items():
        for faces, row in by_faces.items():
            cells = "".join(
                f" {row['stages_ms'][s]['median']:>8.2f}/{row['stages_ms'][s]['p90']:<8.2f}" for s in STAGES
            )
            lines.append(f"{name:<12} {faces.removeprefix('faces_'):>5}{cells} {row['fps'] or 0:>7.1f}")
    for name, about in report["backends"].items():
        if "skipped" in about:
            lines.append(f"{name:<12} not timed: {about['skipped']}")
    det = report["detector"]
    trained = "trained" if det["trained"] else "UNTRAINED stand-in"
    lines.append(
        f"(median/p90 over {report['settings']['repeats']} runs; detector {trained} {Path(det['weights']).name} "
        f"at imgsz {det['imgsz']}, network input {det['network_input_hw'][1]}x{det['network_input_hw'][0]})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli.argument_parser("bench", __doc__)
    parser.add_argument("--json", type=cli.out_file, required=True, help="where to write the report")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="folder with ensemble.json")
    parser.add_argument("--detector", type=Path, default=None, help="face detector .pt (default: WEIGHTS/face_yolo.pt)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per frame and backend")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    parser.add_argument(
        "--imgsz",
        type=cli.detector_imgsz,
        default=VIDEO_IMGSZ,
        help=f"detector input size in px ({VIDEO_IMGSZ} is the live-video one)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=list(BACKENDS),
        default=None,
        help="frame paths to time (default: all available)",
    )
    parser.add_argument(
        "--tta",
        choices=("off", "shipped"),
        default="off",
        help="TTA: off as on the live webcam page (default), or ensemble.json's set (photos)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch, onnxruntime and OpenCV alike (default: theirs)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 0:
        parser.error("--repeats >= 1, --warmup >= 0 and --threads >= 0 are required")
    if args.threads:
        set_threads(args.threads)
    if args.detector is not None and not args.detector.is_file():  # one `error:` line, as for any missing input file
        raise cli.UserInputError(f"{args.detector}: no such detector checkpoint")
    backends = args.backends or available_backends()
    if "cuda" in backends and "cuda" not in available_backends():
        parser.error("--backends cuda: CUDA is not available")
    report = run(
        args.weights,
        backends,
        args.repeats,
        args.warmup,
        args.imgsz,
        args.detector,
        threads=args.threads,
        tta=False if args.tta == "off" else None,
    )
    print(format_table(report))
    if not report["results"]:
        raise cli.UserInputError("no backend could be timed (the reasons are above)")
    cli.write_text_atomically(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
