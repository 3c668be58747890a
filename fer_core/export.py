"""Export the classifiers (softmax inside) and the face detector to ONNX, checked against PyTorch, into a cache.

    python -m fer_core.export --weights weights [--out weights/onnx] [--imgsz 640 320]

At run time `classifier_onnx_path` and `detector_onnx_path` build the ONNX file on first use, named by the
sha256 of the checkpoint (and, for the detector, the input size it was checked at), so a changed checkpoint can
never be paired with a stale graph. Every export is compared with PyTorch on the same inputs before it is used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from fer_core import cli
from fer_core.checkpoint import LoadedClassifier, load_classifier
from fer_core.models import ModelConfig
from fer_core.onnx_session import OnnxLoadError

log = logging.getLogger(__name__)
Opened = TypeVar("Opened")

#: Largest allowed |p_onnx - p_torch| on the same inputs.
MAX_PROB_DIFF = 1e-4
#: Largest allowed differences of the detector's raw outputs on the same inputs: box cx, cy, w, h in input pixels
#: (1/10 px, invisible) and class scores. Float32 rounding through ~100 layers and the distribution-focal box head
#: gives ~0.02 px and ~3e-4 on noise; a broken export is off by whole pixels and tenths of a score.
MAX_BOX_DIFF_PX = 0.1
MAX_SCORE_DIFF = 1e-3
#: ONNX opset for every export here: supported by the onnxruntime we require, and by ultralytics' YOLO11 export.
OPSET = 17


def cache_dir() -> Path:
    """`$FER_CACHE_DIR`, else ~/.cache/fer_core (never inside the repository: an empty value is unset, not ".")."""
    folder = Path(os.environ.get("FER_CACHE_DIR") or Path.home() / ".cache" / "fer_core").expanduser()
    blocking = next((place for place in (folder, *folder.parents) if place.exists() and not place.is_dir()), None)
    if blocking is not None:  # under a file, it was a NotADirectoryError traceback
        raise cli.UserInputError(
            f"{folder}: the ONNX cache folder (FER_CACHE_DIR) lies at or under a file; give a folder"
        )
    return folder


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def export_classifier(loaded: LoadedClassifier, out_path: str | Path) -> Path:
    """Write an ONNX graph (dynamic batch, normalised float input, probabilities out) and verify it."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = loaded.config
    wrapped = _WithSoftmax(loaded.model.cpu().eval())
    dummy = torch.zeros(2, config.in_channels, config.input_size, config.input_size)
    # A name of its own: two processes (the app and a CLI) exporting one checkpoint must not share a scratch file.
    handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}-", suffix=".onnx")
    os.close(handle)
    tmp = Path(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (dummy,),
                str(tmp),
                input_names=["input"],
                output_names=["probs"],
                dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        diff = max_prob_difference(loaded, tmp, config)
        if diff > MAX_PROB_DIFF:
            raise RuntimeError(f"ONNX export of {loaded.path} differs from PyTorch by {diff:.2e} > {MAX_PROB_DIFF}")
        tmp.chmod(0o644)  # mkstemp's 0600 left the classifiers unreadable to other users, unlike the detector
        tmp.replace(out)  # atomic: a reader sees the old file or the new one, never half of one
    finally:
        tmp.unlink(missing_ok=True)
    return out


def max_prob_difference(loaded: LoadedClassifier, onnx_path: str | Path, config: ModelConfig, n: int = 16) -> float:
    """Largest probability difference between PyTorch and onnxruntime on seeded random faces."""
    from fer_core.classifier import OnnxRuntime, TorchRuntime

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(n, config.in_channels, config.input_size, config.input_size), dtype=np.uint8)
    torch_probs = TorchRuntime(loaded, "cpu")(batch)
    onnx_probs = OnnxRuntime(onnx_path, config)(batch)
    return float(np.abs(torch_probs - onnx_probs).max())


def classifier_onnx_path(loaded: LoadedClassifier) -> Path:
    """The cached ONNX file for this exact network, exporting it on first use. Keyed on the hash of the bytes the
    network was built from, not of the file now on disk, which a new fit may have replaced since."""
    target = cache_dir() / "onnx" / f"{loaded.path.stem}-{loaded.sha256[:16]}.onnx"
    if not target.exists():
        export_classifier(loaded, target)
    return target


def export_detector(pt_path: str | Path, out_path: str | Path, imgsz: int) -> Path:
    """Export an ultralytics YOLO .pt with ultralytics' own ONNX exporter (offline), verify it, then move it in place.

    Height and width stay dynamic so onnxruntime gets the same minimal-padding letterbox as ultralytics' predictor
    (a 4:3 frame at 640 runs as 640x480, not 640x640); `imgsz` is the size the export is checked at. The .pt is
    copied to a scratch folder first because ultralytics writes its output next to the weights, which may be
    read-only or shared. Simplification needs onnxslim, which is optional: without it the graph is left as is.
    """
    from fer_core.detection import import_ultralytics, torch_threads_kept

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ultralytics = import_ultralytics()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        source = Path(tmp) / "model.pt"
        shutil.copyfile(pt_path, source)
        with torch_threads_kept():
            exported = ultralytics.YOLO(str(source), task="detect").export(
                format="onnx",
                imgsz=imgsz,
                dynamic=True,
                batch=1,
                simplify=importlib.util.find_spec("onnxslim") is not None,
                opset=OPSET,
                half=False,
                nms=False,
                device="cpu",
                verbose=False,
            )
        exported = Path(exported)
        box_diff, score_diff = detector_output_difference(pt_path, exported, imgsz)
        if box_diff > MAX_BOX_DIFF_PX or score_diff > MAX_SCORE_DIFF:
            raise RuntimeError(
                f"ONNX export of {pt_path} differs from PyTorch: boxes by {box_diff:.2e} px (max {MAX_BOX_DIFF_PX}), "
                f"scores by {score_diff:.2e} (max {MAX_SCORE_DIFF})"
            )
        exported.replace(out)
    return out


def detector_output_difference(pt_path: str | Path, onnx_path: str | Path, imgsz: int) -> tuple[float, float]:
    """Largest raw-output differences (box px, score) between PyTorch and onnxruntime on seeded random inputs.

    Checked at the square `imgsz` input and at a 3:4 one, since the graph's height and width are dynamic.
    """
    from fer_core.detection import import_ultralytics
    from fer_core.yolo_onnx import OnnxYolo, input_side

    net = import_ultralytics().YOLO(str(pt_path), task="detect").model.float().eval()
    session = OnnxYolo(onnx_path)
    side = input_side(imgsz, session.stride)
    short = input_side(side * 3 // 4, session.stride)
    rng = np.random.default_rng(0)
    box_diff = score_diff = 0.0
    for shape in ((side, side), (short, side)):
        blob = rng.random((1, 3, *shape), dtype=np.float32)
        with torch.inference_mode():
            expected = net(torch.from_numpy(blob))
        expected = (expected[0] if isinstance(expected, list | tuple) else expected).numpy()
        got = session.raw(blob)
        if got.shape != expected.shape:
            raise RuntimeError(f"ONNX detector output shape {got.shape} != PyTorch {expected.shape}")
        box_diff = max(box_diff, float(np.abs(got[:, :4] - expected[:, :4]).max()))
        score_diff = max(score_diff, float(np.abs(got[:, 4:] - expected[:, 4:]).max()))
    return box_diff, score_diff


def check_detector_loads(pt_path: Path) -> None:
    """A file ultralytics cannot load as a detector is named as given (its own error names a scratch copy)."""
    from fer_core.detection import import_ultralytics

    try:
        import_ultralytics().YOLO(str(pt_path), task="detect")
    except Exception as err:
        raise cli.UserInputError(f"{pt_path}: not a YOLO detector checkpoint ({type(err).__name__}: {err})") from err


def open_cached_export(
    path: Path, open_export: Callable[[Path], Opened], export_again: Callable[[Path], object], source: Path
) -> Opened:
    """`open_export(path)` on a cached export of `source`, exported again once when it does not load: a damaged
    cache file (a full disk, a copy cut short) was an onnxruntime traceback on every run until found and deleted."""
    try:
        return open_export(path)
    except OnnxLoadError as err:
        log.warning("%s; exporting %s again", err, source)
    export_again(path)  # replaces the file atomically, as the first export wrote it
    try:
        return open_export(path)
    except OnnxLoadError as err:
        raise OnnxLoadError(
            f"{source}: its fresh ONNX export does not load either ({err}); run it on PyTorch (--runtime torch, or "
            "FER_RUNTIME=torch for the app)"
        ) from err


def detector_onnx_path(pt_path: str | Path, imgsz: int) -> Path:
    """The cached ONNX file for this exact detector checkpoint and input size, exporting it on first use."""
    path = Path(pt_path)
    target = cache_dir() / "onnx" / f"{path.stem}-{file_sha256(path)[:16]}-{imgsz}.onnx"
    if not target.exists():
        export_detector(path, target, imgsz)
    return target


def main(argv: list[str] | None = None) -> None:
    from fer_core.detection import DETECTOR_FILE, PHOTO_IMGSZ, VIDEO_IMGSZ

    parser = cli.argument_parser("export", __doc__)
    parser.add_argument(
        "--weights", type=Path, default=Path("weights"), help="folder with ensemble.json and the .pt files"
    )
    parser.add_argument(
        "--out", type=cli.out_folder, default=None, help="where to write .onnx files (default: the cache)"
    )
    parser.add_argument(
        "--detector",
        type=Path,
        default=None,
        help="face detector .pt (default: WEIGHTS/face_yolo.pt, skipped if absent)",
    )
    parser.add_argument(
        "--imgsz",
        type=cli.detector_imgsz,
        nargs="+",
        default=[PHOTO_IMGSZ, VIDEO_IMGSZ],
        help="detector sizes to export and check",
    )
    args = parser.parse_args(argv)
    from fer_core.ensemble import read_spec  # ensemble imports this module

    spec = read_spec(args.weights)
    # The detector and --out are checked before the first export, not after the classifiers were written.
    detector = args.detector or args.weights / DETECTOR_FILE
    if args.detector is not None and not detector.is_file():  # one `error:` line, as for any missing input file
        raise cli.UserInputError(f"{detector}: no such detector checkpoint")
    if detector.is_file():
        check_detector_loads(detector)
    classifier_names = {member["file"]: f"{Path(member['file']).stem}.onnx" for member in spec["models"]}
    detector_names = {imgsz: f"{detector.stem}-{imgsz}.onnx" for imgsz in args.imgsz} if detector.is_file() else {}
    if args.out:
        cli.prepare_out_folder(args.out, [*classifier_names.values(), *detector_names.values()])
    report: dict[str, dict[str, object]] = {}
    for member in spec["models"]:
        loaded = load_classifier(args.weights / member["file"])
        target = (args.out / classifier_names[member["file"]]) if args.out else classifier_onnx_path(loaded)
        if args.out:
            export_classifier(loaded, target)
        report[loaded.name] = {"onnx": str(target), "max_prob_diff": max_prob_difference(loaded, target, loaded.config)}
    if detector_names:
        for imgsz, name in detector_names.items():
            if args.out:
                target = export_detector(detector, args.out / name, imgsz)
            else:
                target = detector_onnx_path(detector, imgsz)
            box_diff, score_diff = detector_output_difference(detector, target, imgsz)
            report[f"{detector.stem}@{imgsz}"] = {
                "onnx": str(target),
                "max_box_diff_px": box_diff,
                "max_score_diff": score_diff,
            }
    else:
        report["face_detector"] = {"skipped": f"{detector} not found (the app falls back to the Haar cascade)"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli.run(main)
