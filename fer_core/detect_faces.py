"""Run the face detector over a folder tree and write WIDER-format result files for `fer_core.wider_eval`.

    python -m fer_core.detect_faces /work/shared/data/widerface/val/images --out results/ [--backend yolo]

Why the defaults differ from the app's: AP integrates over the whole precision/recall curve, so evaluation needs
low-confidence detections (conf 0.01), small faces (min-face 1) and crowds (max-faces 1000).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from fer_core import cli
from fer_core.detection import (
    BACKENDS,
    FaceBox,
    FaceDetector,
    fallback_unannounced_where_refused,
    refusal_of_fallback,
)
from fer_core.imageio import ImageLoadError, load_image_sized
from fer_core.predict import UnreadableFolder, iter_inputs

#: What ultralytics takes as a device; anything else was passed over without a word (the CPU ran instead).
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|\d+(,\d+)*", re.IGNORECASE)


def yolo_device(text: str) -> str:
    """argparse `type` of `--device`."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda, cuda:N, or GPU numbers such as 0 or 0,1")
    return text.lower()


def iter_images(root: Path, unreadable: list[UnreadableFolder] | None = None) -> list[Path]:
    """Image files under `root` as `predict` finds them: every type the app reads, linked folders followed, hidden
    files (macOS `._x.jpg`) skipped and other files named in a warning, folders that cannot be listed added to
    `unreadable`. A list of its own silently left out TIFFs with a `.jfif`, `.pgm` or `.gif` name, and `rglob` left
    out linked folders."""
    return list(iter_inputs([root], unreadable))


def forget_results_under(out_dir: Path, root: Path, folders: list[UnreadableFolder]) -> None:
    """Remove an earlier run's result files for folders that could not be listed now: their faces would be scored
    as this run's, as for an image that became unreadable."""
    for folder in folders:
        for stale in (out_dir / folder.path.relative_to(root)).rglob("*.txt"):
            stale.unlink(missing_ok=True)


def in_file_pixels(boxes: Sequence[FaceBox], shown: tuple[int, int], full: tuple[int, int]) -> list[FaceBox]:
    """Boxes found on the decoded (possibly shrunk) picture, in the pixels of the file: (width, height) pairs."""
    sx, sy = full[0] / shown[0], full[1] / shown[1]
    return [FaceBox(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy, b.score) for b in boxes]


def format_result(name: str, boxes: Sequence[FaceBox]) -> str:
    """Official result layout: name line, count line, then `x y w h score` lines."""
    lines = [name, str(len(boxes))]
    lines += [f"{b.x1:.2f} {b.y1:.2f} {b.width:.2f} {b.height:.2f} {b.score:.6f}" for b in boxes]
    return "\n".join(lines) + "\n"


def result_path(out_dir: Path, root: Path, image: Path) -> Path:
    """`out/<relative path without extension>.txt`, so `<event>/<name>.jpg` becomes `<event>/<name>.txt`."""
    return (out_dir / image.relative_to(root)).with_suffix(".txt")


def blocked_result(out_dir: Path, targets: list[Path]) -> str | None:
    """Why a result file cannot be written (a folder in its place, or a file where its folder goes), or None: the
    run stopped at that image with the ones before it done and the rest not, and "File exists" said nothing."""
    try:
        for target in targets:
            if target.is_dir():
                return f"{target.relative_to(out_dir)} is a folder, where a result file goes"
        for folder in sorted({target.parent for target in targets}):
            in_the_way = next((p for p in (folder, *folder.parents) if p.is_file() and out_dir in p.parents), None)
            if in_the_way is not None:
                return f"{in_the_way.relative_to(out_dir)} is a file, where a folder of results goes"
    except OSError as err:  # a folder we may not search: is_dir() raises rather than answering
        return f"cannot check where the results go ({err.strerror or err}: {err.filename})"
    return None


def run(
    detector: FaceDetector, images: list[Path], root: Path, out_dir: Path, progress: bool = True
) -> tuple[int, list[Path], float]:
    """Detect on `images` (found under `root`); returns (images done, unreadable images, seconds)."""
    done, bad = 0, []
    start = time.perf_counter()
    for path in tqdm(images, desc=f"detect ({detector.backend})", unit="img", disable=not progress):
        target = result_path(out_dir, root, path)
        try:  # the app's decoder: OpenCV filled a cut JPEG in with grey, had no pixel limit, and refused EXIF TIFFs
            rgb, full_size = load_image_sized(path)
        except ImageLoadError as err:
            target.unlink(missing_ok=True)  # an earlier run's faces must not be scored as this image's
            bad.append(path)
            tqdm.write(f"skipping unreadable image: {err}", file=sys.stderr)
            continue
        boxes = in_file_pixels(detector.detect(rgb, full_size), (rgb.shape[1], rgb.shape[0]), full_size)
        cli.write_text_atomically(target, format_result(cli.printable(path.stem), boxes))
        done += 1
    return done, bad, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = cli.argument_parser("detect_faces", __doc__)
    parser.add_argument("image_root", type=Path, help="folder searched recursively for images")
    parser.add_argument("--out", type=cli.out_folder, required=True, help="folder for the result files")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="yolo (the trained face model), haar (OpenCV's cascade), or auto: yolo, or haar where its weights are "
        "missing or unusable",
    )
    parser.add_argument("--weights", type=Path, default=None, help="YOLO .pt (default: weights/face_yolo.pt)")
    parser.add_argument("--conf", type=float, default=0.01, help="score threshold (low, for AP)")
    parser.add_argument(
        "--imgsz",
        type=cli.detector_imgsz,
        default=640,
        help="YOLO input size in px (longest side); larger finds smaller faces",
    )
    parser.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold")
    parser.add_argument("--min-face", type=int, default=1, help="drop boxes narrower/shorter than this (px)")
    parser.add_argument(
        "--max-faces", type=int, default=1000, help="keep at most this many boxes per image (the most confident)"
    )
    parser.add_argument(
        "--device",
        default=None,
        type=yolo_device,
        help="YOLO's device, e.g. cpu or 0 (default: the first GPU if there is one, else the CPU)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="multi-scale + mirror test-time augmentation fused by WBF (YOLO only; about 6x slower)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, scripts)")
    args = parser.parse_args(argv)

    if not args.image_root.is_dir():  # one `error:` line, as every tool says a missing input (no usage line)
        raise cli.UserInputError(f"{args.image_root}: not a folder")
    unreadable: list[UnreadableFolder] = []
    images = iter_images(args.image_root, unreadable)
    if not images:  # exit 0 with no result file would read as "done"
        raise cli.UserInputError(f"no images under {args.image_root}")
    by_result: dict[Path, list[Path]] = {}
    for image in images:
        by_result.setdefault(result_path(args.out, args.image_root, image), []).append(image)
    clashes = [names for names in by_result.values() if len(names) > 1]
    if clashes:  # x.jpg and x.png both write x.txt: the last would replace the first's faces without a word
        shown = ", ".join(" and ".join(str(p.relative_to(args.image_root)) for p in names) for names in clashes[:3])
        parser.error(f"{len(clashes)} result file(s) would be written twice, for {shown}; rename one of each")
    if blocked := blocked_result(args.out, list(by_result)):  # found at that image, after the ones before it
        parser.error(f"--out {args.out}: {blocked}")
    try:
        with fallback_unannounced_where_refused(args.backend):
            detector = FaceDetector(
                backend=args.backend,
                weights=args.weights,
                conf=args.conf,
                min_face=args.min_face,
                max_faces=args.max_faces,
                imgsz=args.imgsz,
                iou=args.iou,
                device=args.device,
                tta=args.tta,
            )
    except ValueError as err:  # an out-of-range --conf, --iou or --max-faces
        parser.error(str(err))
    if refusal := refusal_of_fallback(args.backend, detector):
        parser.error(f"--backend yolo: {refusal}")
    if args.device not in (None, "cpu") and detector.runtime != "torch":  # only PyTorch (ultralytics) takes a GPU
        why = "the Haar cascade runs" if detector.backend == "haar" else "no CUDA GPU here; YOLO runs"
        print(f"warning: --device {args.device}: {why} on the CPU", file=sys.stderr)
    if args.tta and detector.backend != "yolo":
        print("warning: --tta applies to the YOLO detector only; the Haar cascade runs without it", file=sys.stderr)
    # Before the first image: mkdir failed at its result. After the detector's refusals: they leave no folder.
    cli.prepare_out_folder(args.out, ())
    forget_results_under(args.out, args.image_root, unreadable)
    done, bad, seconds = run(detector, images, args.image_root, args.out, progress=not args.no_progress)
    rate = done / seconds if seconds > 0 else float("inf")
    mode = f"backend {detector.backend}, {detector.runtime}, imgsz {detector.imgsz}" + (", TTA" if detector.tta else "")
    folders = f", {len(unreadable)} folder(s) unreadable" if unreadable else ""
    print(f"{done} images in {seconds:.1f} s ({rate:.2f} images/s, {mode}); {len(bad)} unreadable{folders}")
    return cli.PARTIAL_FAILURE if bad or unreadable else 0


if __name__ == "__main__":
    cli.run(main)
