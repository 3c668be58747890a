"""Train the YOLO face detector from scratch on WIDER FACE (+ Face Mask) and export it to `weights/face_yolo.pt`.

    python -m fer_core.train_detector --data-root /work/shared/data --work /tmp/facedet --epochs 100 \
        --imgsz 640 --model yolo11n.yaml [--resume] [--device 0]

Why from the YAML: pretrained ultralytics weights would have to be downloaded and carry their own licence; a
one-class model built from `yolo11n.yaml` needs nothing from the network. Training is resumable because GPU
sessions are short: `--resume` continues `WORK/runs/face/weights/last.pt` with ultralytics' own resume.
WIDER FACE is licensed for non-commercial research use, and so are weights trained on it: say so in the model card.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from fer_core import cli
from fer_core.checkpoint import CheckpointError, read_checkpoint
from fer_core.detection import DEFAULT_DETECTOR_WEIGHTS, FaceDetector, import_ultralytics
from fer_core.widerface import REPO_ROOT, ConversionConfig, convert_to_yolo

RUN_NAME = "face"
LICENSE_NOTE = "Trained on WIDER FACE (non-commercial research use only) and Face Mask Detection (CC0)."


def build_parser() -> argparse.ArgumentParser:
    p = cli.argument_parser("train_detector", __doc__)
    p.add_argument("--data-root", type=Path, required=True, help="folder holding widerface/ and facemask/")
    p.add_argument(
        "--work", type=cli.out_folder, required=True, help="work folder (outside the repo): dataset/ and runs/"
    )
    p.add_argument("--epochs", type=int, default=100, help="training epochs (see also --time)")
    p.add_argument("--imgsz", type=cli.detector_imgsz, default=640, help="training image size in px (longest side)")
    p.add_argument("--model", default="yolo11n.yaml", help="ultralytics model YAML (or a local .pt to fine-tune)")
    p.add_argument("--resume", action="store_true", help="continue WORK/runs/face/weights/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start over even if a previous run exists")
    p.add_argument("--device", default=None, help="e.g. 0, cpu (default: ultralytics picks)")
    p.add_argument("--batch", type=int, default=16, help="images per training batch")
    p.add_argument("--workers", type=int, default=8, help="data-loading worker processes (0: load in the main one)")
    p.add_argument("--cache", choices=("ram", "disk"), default=None, help="cache decoded images (faster epochs)")
    # ultralytics' val set is the dev-val that AP is reported on: early stopping (and its best.pt) would select on
    # it, so both are off by default and the last epoch is what gets exported.
    p.add_argument("--patience", type=int, default=0, help="early stopping on dev-val fitness (0: off)")
    p.add_argument("--time", type=float, default=None, help="hours to train; overrides --epochs (ultralytics 'time')")
    p.add_argument("--no-val", action="store_true", help="validate only after the last epoch (short GPU leases)")
    p.add_argument("--seed", type=cli.seed, default=0, help="training seed and WIDER event split seed")
    p.add_argument("--min-face-px", type=float, default=ConversionConfig.min_face_px, help="tiny-face cut at 640 px")
    p.add_argument(
        "--train-fraction",
        type=float,
        default=ConversionConfig.train_event_fraction,
        help="share of WIDER FACE events on the training side; the val images of the others are the dev-val set "
        "AP is reported on",
    )
    p.add_argument("--copy-images", action="store_true", help="copy images instead of symlinking them")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--export-to", type=Path, default=DEFAULT_DETECTOR_WEIGHTS, help="where the last epoch's weights go")
    p.add_argument("--quiet", action="store_true", help="hide ultralytics' per-epoch output")
    p.add_argument("--prepare-only", action="store_true", help="convert the data, then stop")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch < 1:
        parser.error("--epochs >= 1 and --batch >= 1 are required")
    if args.export_to.is_dir() or args.export_to.suffix != ".pt":  # found only after training, otherwise
        parser.error(f"--export-to {args.export_to}: give a .pt file name (e.g. weights/face_yolo.pt)")
    try:
        cli.out_file(str(args.export_to))  # under a file, or a folder we may not write in: also found only after
    except argparse.ArgumentTypeError as err:
        parser.error(f"--export-to {err}")
    if args.time is not None and not (math.isfinite(args.time) and args.time > 0):  # -1 trained one epoch, exit 0
        parser.error(f"--time must be a positive number of hours, got {args.time}")
    if args.patience < 0 or args.workers < 0:
        parser.error("--patience and --workers must be at least 0")
    if not (math.isfinite(args.min_face_px) and args.min_face_px >= 0):  # NaN was recorded, and refused every resume
        parser.error(f"--min-face-px must be a number of pixels, at least 0, got {args.min_face_px}")
    if not 0.0 <= args.train_fraction <= 1.0:
        parser.error(f"--train-fraction must be between 0 and 1, got {args.train_fraction}")
    if args.work.resolve() == REPO_ROOT or REPO_ROOT in args.work.resolve().parents:
        parser.error("--work must lie outside the repository: the data may never be committed")
    model = str(args.model)
    if not model.endswith((".yaml", ".yml")) and not Path(model).is_file():
        # a bare name like yolo11n.pt would make ultralytics download pretrained weights
        parser.error(f"--model must be a model YAML or an existing local .pt file, got {model!r}")
    if model.endswith(".pt") and is_classifier_checkpoint(Path(model)):  # ultralytics' TypeError after the conversion
        parser.error(f"--model {model} is one of our emotion classifiers, not a YOLO detector")
    return args


def is_classifier_checkpoint(path: Path) -> bool:
    """Whether `path` is one of our emotion classifiers (which ultralytics would meet with a TypeError)."""
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def run_dir(work: Path) -> Path:
    return work / "runs" / RUN_NAME


def train_kwargs(args: argparse.Namespace, data_yaml: Path) -> dict[str, Any]:
    """The ultralytics `train()` arguments for a fresh run (kept in one place so tests can check them)."""
    kwargs: dict[str, Any] = {
        "data": str(data_yaml),
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "workers": args.workers,
        "patience": args.patience,
        "seed": args.seed,
        "project": str((args.work / "runs").resolve()),
        "name": RUN_NAME,
        "exist_ok": True,
        "pretrained": False,
        "single_cls": True,
        "plots": False,
        "amp": not args.no_amp,
        "verbose": not args.quiet,
    }
    if args.device is not None:
        kwargs["device"] = args.device
    if args.time:
        kwargs["time"] = args.time
    if args.no_val:
        kwargs["val"] = False
    if args.cache:
        kwargs["cache"] = args.cache
    return kwargs


def _amp_without_download(model: Any) -> bool:
    """Replace ultralytics' AMP self-test, which downloads yolo26n.pt: use AMP on CUDA, as it does when offline."""
    return next(model.parameters()).device.type == "cuda"


@contextlib.contextmanager
def offline_training(verbose: bool = True) -> Iterator[Any]:
    """Ultralytics with the training-time network calls disabled (font download, AMP-check download, Platform
    upload) and, for long runs, its progress output back on (detection keeps it quiet)."""
    ultralytics = import_ultralytics()
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer_mod
    import ultralytics.utils as ul_utils

    logger = ul_utils.LOGGER
    loggables = [logger, *logger.handlers]
    saved_levels = [x.level for x in loggables]
    saved_verbose = ul_utils.VERBOSE
    saved_font, saved_amp = data_utils.check_font, trainer_mod.check_amp
    saved_key = os.environ.pop("ULTRALYTICS_API_KEY", None)  # Platform streaming would upload the run
    data_utils.check_font = lambda *args, **kwargs: None  # plots=False: no font needed
    trainer_mod.check_amp = _amp_without_download
    ul_utils.VERBOSE = verbose  # read at call time by ultralytics' progress bars
    for x in loggables:
        x.setLevel(logging.INFO if verbose else logging.ERROR)
    try:
        yield ultralytics
    finally:
        data_utils.check_font, trainer_mod.check_amp = saved_font, saved_amp
        ul_utils.VERBOSE = saved_verbose
        for x, level in zip(loggables, saved_levels, strict=True):
            x.setLevel(level)
        if saved_key is not None:
            os.environ["ULTRALYTICS_API_KEY"] = saved_key


def dataset_usable(dataset: Path) -> bool:
    """A converted dataset can be reused if it still sits where its data.yaml says and no image link is broken
    (work folders get moved between machines)."""
    data_yaml = dataset / "data.yaml"
    if not data_yaml.is_file():
        return False
    recorded = yaml.safe_load(data_yaml.read_text(encoding="utf-8")).get("path")
    if recorded is None or Path(recorded) != dataset.resolve():
        return False
    return all(p.exists() for p in (dataset / "images").rglob("*") if p.is_symlink())


#: Conversion settings that decide which events train and which boxes count; a resumed run must keep them.
SPLIT_SETTINGS = ("min_face_px", "train_event_fraction", "seed", "include_facemask")


def prepare_data(args: argparse.Namespace) -> Path:
    """Convert the data bundle into WORK/dataset, reusing it on --resume so the run sees the same files."""
    dataset = args.work / "dataset"
    config = ConversionConfig(
        min_face_px=args.min_face_px,
        train_event_fraction=args.train_fraction,
        seed=args.seed,
        copy_images=args.copy_images,
    )
    if args.resume:
        check_same_conversion(dataset, config)
        if dataset_usable(dataset):
            return dataset / "data.yaml"
    result = convert_to_yolo(args.data_root, dataset, config)
    print(f"dataset: {result.images} images, {result.boxes} boxes, dropped {result.dropped}")
    print(f"dev-val: {len(result.devval_events)} events; ground truth in {result.devval['gt']}")
    return result.data_yaml


def check_same_conversion(dataset: Path, config: ConversionConfig) -> None:
    """A resume under another --seed or --train-fraction would move trained events into the dev-val that AP is
    reported on (or train on the old split while the flags say otherwise): refused, naming the differences."""
    recorded_file = dataset / "conversion.json"
    if not recorded_file.is_file():
        return
    recorded = json.loads(recorded_file.read_text(encoding="utf-8")).get("config", {})
    wanted = asdict(config)
    changed = [
        f"{key} {recorded.get(key)} -> {wanted[key]}" for key in SPLIT_SETTINGS if recorded.get(key) != wanted[key]
    ]
    if changed:
        raise cli.UserInputError(
            f"{dataset} was converted with other settings ({', '.join(changed)}): resume with the flags of the "
            "first run, or pass --overwrite to start over"
        )


def run_finished(last: Path) -> bool:
    """Ultralytics marks a completed run by `epoch == -1` in last.pt; resuming that would raise."""
    import_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    ckpt, _ = torch_safe_load(str(last), safe_only=True)  # weights_only, with ultralytics' own allow-list
    return isinstance(ckpt, dict) and ckpt.get("epoch", -1) == -1


def export(best: Path, target: Path) -> Path:
    """Copy atomically, then check that the detector really loads the file (no silent Haar fallback)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.incoming{target.suffix}")
    shutil.copyfile(best, tmp)
    detector = FaceDetector(backend="yolo", weights=tmp)  # checked before it replaces weights that work
    if detector.backend != "yolo":
        tmp.unlink()
        raise RuntimeError(f"exported weights do not load: {detector.warning}")
    os.replace(tmp, target)
    return target


def train(args: argparse.Namespace) -> Path | None:
    """Convert, train (or resume) and export; returns the exported weights (None with --prepare-only)."""
    last = run_dir(args.work) / "weights" / "last.pt"
    if last.is_file() and not (args.resume or args.overwrite or args.prepare_only):  # before the data is rebuilt
        raise cli.UserInputError(f"{last} exists: pass --resume to continue it or --overwrite to start over")
    data_yaml = prepare_data(args)
    if args.prepare_only:
        return None
    with offline_training(verbose=not args.quiet) as ultralytics:
        if args.resume and last.is_file() and run_finished(last):
            print(f"{last} is a finished run; exporting it (use --overwrite to train again)")
            save_dir = run_dir(args.work)
        elif args.resume and last.is_file():
            model = ultralytics.YOLO(str(last))
            overrides: dict[str, Any] = {
                "resume": True,
                "data": str(data_yaml),
                "workers": args.workers,
                "save_dir": str(run_dir(args.work).resolve()),  # the checkpoint records the old absolute path
            }
            if args.device is not None:
                overrides["device"] = args.device
            model.train(**overrides)
            save_dir = Path(model.trainer.save_dir)
        else:
            if args.resume:
                print(f"no {last} to resume; starting a fresh run")
            model = ultralytics.YOLO(args.model, task="detect")
            model.train(**train_kwargs(args, data_yaml))
            save_dir = Path(model.trainer.save_dir)
    final = final_weights(save_dir)
    target = export(final, args.export_to)
    print(f"exported {final} -> {target}\n{LICENSE_NOTE}")
    return target


def final_weights(save_dir: Path) -> Path:
    """The last epoch, never ultralytics' best.pt: that one is chosen on its val set, the dev-val we report on."""
    return save_dir / "weights" / "last.pt"


def main(argv: list[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    cli.run(main)
