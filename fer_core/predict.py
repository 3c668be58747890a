"""Predict emotions for photos, face crops or FER-2013 CSV rows.

    python -m fer_core.predict photos/ me.jpg --json out.json            # detect faces, classify each
    python -m fer_core.predict crops/ --crops --json out.json            # inputs already are faces
    python -m fer_core.predict fer2013.csv --csv-out predictions.csv     # FER-style pixels rows

Folders are walked recursively. An unreadable file or malformed CSV row is reported (in the
output and on stderr) and the rest still processed; nothing is silently dropped, and the exit
status is then 1 (`cli.PARTIAL_FAILURE`) rather than 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from fer_core import cli
from fer_core.data import (
    CSV_SUFFIXES,
    FerDataError,
    missing_columns_error,
    parse_emotion,
    parse_pixels,
    read_csv_records,
)
from fer_core.detection import BACKENDS as DETECTOR_BACKENDS
from fer_core.detection import DEFAULT_CONF, fallback_unannounced_where_refused, refusal_of_fallback
from fer_core.imageio import IMAGE_SUFFIXES, ImageLoadError, is_image_path, load_image_sized
from fer_core.labels import EMOTIONS
from fer_core.pipeline import DEFAULT_WEIGHTS, ImageResult, Pipeline


def iter_inputs(paths: list[Path], unreadable: list[UnreadableFolder] | None = None) -> Iterator[Path]:
    """Files as given; folders walked recursively for images (sorted, hidden files skipped). Other files in a
    folder (documents, CSVs) are named in one warning, so none is left out unnoticed. Linked folders are followed
    (each real folder once, so a link loop ends); a broken link with an image's name is yielded, to be reported
    as unreadable like any other bad image. Folders that cannot be listed are warned about and added to
    `unreadable`, for the caller's results and exit status: their images are missing from the output."""
    for path in paths:
        if path.is_dir():
            found, passed_over = 0, []
            for file in _walk_files(path, unreadable if unreadable is not None else []):
                if is_image_path(file):
                    found += 1
                    yield file
                else:
                    passed_over.append(file.relative_to(path).as_posix())
            if passed_over:
                warn_passed_over(path, passed_over)
            if not found:
                print(f"warning: {path}: no image files in this folder", file=sys.stderr)
        else:
            yield path


@dataclass(frozen=True)
class UnreadableFolder:
    """A folder under an input that could not be listed, and why."""

    path: Path
    message: str


def _walk_files(root: Path, unreadable: list[UnreadableFolder]) -> list[Path]:
    """Every non-hidden entry under `root` that is not a folder, sorted, through linked folders too; folders that
    cannot be listed go to `unreadable`.

    `Path.rglob` does not enter linked folders before Python 3.13, so a folder of links to albums gave nothing."""
    files, seen = [], set()

    def cannot_list(err: OSError) -> None:
        folder = UnreadableFolder(Path(err.filename), f"{err.filename}: cannot read this folder ({err.strerror})")
        print(f"warning: {folder.message}; its files are left out", file=sys.stderr)
        unreadable.append(folder)

    for folder, dir_names, file_names in os.walk(root, onerror=cannot_list, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:  # a link back up the tree, or a second link to the same folder
            dir_names.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        dir_names[:] = sorted(name for name in dir_names if not name.startswith("."))  # in order: first link wins
        files += [Path(folder) / name for name in file_names if not name.startswith(".")]
    return sorted(files)


def warn_passed_over(folder: Path, names: list[str]) -> None:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    print(
        f"warning: {folder}: skipped {len(names)} file(s) that are not readable images of a known type "
        f"({', '.join(sorted(IMAGE_SUFFIXES))}): {shown}",
        file=sys.stderr,
    )


def is_csv(path: Path) -> bool:
    return path.name.lower().endswith(CSV_SUFFIXES) and not is_image_path(path)


def error_record(path: Path, message: str) -> dict[str, Any]:
    """The JSON record of an input that gave no result: an unreadable image, or a folder that could not be listed."""
    return {
        "image": cli.printable(path),
        "error": cli.printable(message),
        "width": None,
        "height": None,
        "faces": [],
        "face_limit_reached": False,
    }


#: A face crop's shortest side and most elongated shape: below and beyond them an input is no face crop (a 1x1 or
#: 5000x1 picture was squeezed to 48x48 and came back "angry 0.41" like any face).
MIN_CROP_SIDE = 8
MAX_CROP_ASPECT = 4.0


def crop_problem(width: int, height: int) -> str | None:
    """Why a picture given with `--crops` cannot be a face crop, or None."""
    if min(width, height) < MIN_CROP_SIDE:
        return f"{width}x{height} px is too small for a face crop (at least {MIN_CROP_SIDE} px a side)"
    if max(width, height) > MAX_CROP_ASPECT * min(width, height):
        return f"{width}x{height} px is too elongated for a face crop (at most {MAX_CROP_ASPECT:g}:1)"
    return None


def predict_images(pipe: Pipeline, files: list[Path], crops: bool) -> list[dict[str, Any]]:
    records = []
    for file in tqdm(files, desc="images", disable=len(files) < 2):
        try:
            image, file_size = load_image_sized(file)
        except ImageLoadError as err:
            print(f"error: {err}", file=sys.stderr)
            records.append(error_record(file, str(err)))
            continue
        height, width = image.shape[:2]
        if crops and (problem := crop_problem(*file_size)):
            print(f"error: {file}: {problem}", file=sys.stderr)
            records.append(error_record(file, problem))
            continue
        result = ImageResult(pipe.classify_crops([image]), width, height) if crops else pipe(image, file_size)
        if limited := pipe.at_face_limit(n_faces := len(result.faces)):
            print(f"warning: {file}: labelled the {n_faces} most confident faces (--max-faces)", file=sys.stderr)
        result = result.in_pixels_of(*file_size)  # analysed downscaled (over 4096 px): the file's size and pixels
        records.append({"image": cli.printable(file), **result.to_dict(), "face_limit_reached": limited})
    return records


#: Columns of the predictions CSV (after `source`, which names the input file).
CSV_COLUMNS = ["line", "true_label", "predicted", *EMOTIONS, "error"]


def predict_csv(pipe: Pipeline, path: Path, batch_size: int = 512) -> pd.DataFrame:
    """One output row per input record: predictions, or an `error` naming what is wrong with it."""
    columns, records = read_csv_records(path)
    if "pixels" not in columns:
        raise missing_columns_error(path, columns, ["pixels"])
    rows: list[dict[str, Any]] = []
    good_rows, faces = [], []
    try:
        for record in records:
            row: dict[str, Any] = {"line": record.line, "error": ""}
            try:
                if record.error:
                    raise FerDataError(record.error)
                if record.fields.get("emotion", "").strip() != "":
                    row["true_label"] = EMOTIONS[parse_emotion(record.fields["emotion"], record.where)]
                faces.append(parse_pixels(record.fields["pixels"], record.where))
                good_rows.append(len(rows))
            except FerDataError as err:
                print(f"error: {err}", file=sys.stderr)
                row["error"] = str(err)
            rows.append(row)
    except FerDataError as err:  # unreadable from some line on (truncated, bad bytes): keep the rows before it
        print(f"error: {err}", file=sys.stderr)
        rows.append({"line": None, "error": str(err)})
    if not rows:
        raise FerDataError(f"{path}: no records after the header")
    for start in range(0, len(faces), batch_size):
        batch = np.stack(faces[start : start + batch_size])[:, None]
        probs = pipe.ensemble.predict_batch(batch)
        for offset, index in enumerate(good_rows[start : start + batch_size]):
            ensemble = probs["ensemble"][offset]
            rows[index]["predicted"] = EMOTIONS[int(ensemble.argmax())]
            rows[index].update({name: round(float(p), 5) for name, p in zip(EMOTIONS, ensemble, strict=True)})
    return pd.DataFrame(rows).reindex(columns=CSV_COLUMNS)


def overwritten_input(args: argparse.Namespace, inputs: list[Path]) -> str | None:
    """Why the outputs would destroy an input, a photo or each other, or None. `--json me.jpg you.jpg` (a shell
    slip: argparse gives --json the first photo) replaced the photo with results, and `--csv-out fer.csv` the
    data read from it."""
    given = {path.resolve() for path in inputs}
    outputs = [(flag, path) for flag, path in (("--json", args.json), ("--csv-out", args.csv_out)) if path]
    for flag, path in outputs:
        if path.resolve() in given:
            return f"{flag} {path} is one of the inputs: writing the results there would overwrite it"
        if path.exists() and (is_image_path(path) or is_csv(path)) and not holds_predictions(path):
            return f"{flag} {path} is an existing image or data file, not earlier results: it would be overwritten"
    if len(outputs) == 2 and outputs[0][1].resolve() == outputs[1][1].resolve():
        return "--json and --csv-out name the same file"
    return None


def holds_predictions(path: Path) -> bool:
    """Whether a file is this tool's earlier predictions CSV (its header), which a new run may replace."""
    try:
        return list(pd.read_csv(path, nrows=0).columns) == ["source", *CSV_COLUMNS]  # .gz/.xz/.zip as pandas reads
    except (OSError, ValueError, EOFError, UnicodeDecodeError, pd.errors.ParserError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = cli.argument_parser("predict", __doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="images, folders, or FER-2013 CSV files")
    parser.add_argument("--crops", action="store_true", help="inputs are face crops: skip detection")
    parser.add_argument("--json", type=cli.out_file, help="write image results here (a JSON list)")
    parser.add_argument("--csv-out", type=cli.out_file, help="write predictions for CSV inputs here")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help=cli.PIPELINE_WEIGHTS_HELP)
    cli.add_runtime_option(parser, cli.PIPELINE_RUNTIME_SUBJECT)
    parser.add_argument("--detector", default="auto", choices=DETECTOR_BACKENDS, help=cli.DETECTOR_HELP)
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help="face detection confidence threshold")
    parser.add_argument("--max-faces", type=int, default=100, help="label at most this many faces per photo")
    parser.add_argument(
        "--tta", choices=("shipped", "off"), default="shipped", help="ensemble.json's TTA set, or one view (faster)"
    )
    args = parser.parse_args(argv)

    if not 0.0 <= args.conf <= 1.0:
        parser.error(f"--conf must be between 0 and 1, got {args.conf}")
    csv_inputs = [p for p in args.paths if is_csv(p) and not p.is_dir()]  # a missing one becomes its error row
    unreadable_folders: list[UnreadableFolder] = []
    image_inputs = list(iter_inputs([p for p in args.paths if p not in csv_inputs], unreadable_folders))
    if unreadable_folders and not args.json:
        parser.error(f"{unreadable_folders[0].message}, and without --json the missing images would go unrecorded")
    if not csv_inputs and not image_inputs and not unreadable_folders:
        parser.error("no images or CSV files found in " + ", ".join(map(str, args.paths)))
    if csv_inputs and not args.csv_out:
        parser.error(f"{csv_inputs[0]}: CSV inputs (.csv, or one CSV in a .gz/.xz/.zip) need --csv-out")
    if image_inputs and not args.json:
        parser.error("image inputs need --json")
    clash = overwritten_input(args, [*csv_inputs, *image_inputs])
    if clash:
        parser.error(clash)
    detector = None if args.crops or not image_inputs else args.detector
    if args.max_faces < 1:
        parser.error("--max-faces must be at least 1")
    options = {"conf": args.conf, "max_faces": args.max_faces} if detector else {}
    with fallback_unannounced_where_refused(detector):
        pipe = Pipeline.load(args.weights, runtime=args.runtime, detector_backend=detector, **options)
    if refusal := refusal_of_fallback(detector, pipe.detector):
        parser.error(f"--detector yolo: {refusal}")
    if args.tta == "off":
        pipe = pipe.with_tta(False)

    unusable = 0
    if image_inputs or unreadable_folders:
        records = predict_images(pipe, image_inputs, args.crops)
        records += [
            error_record(folder.path, f"{folder.message}; its images are missing") for folder in unreadable_folders
        ]
        cli.write_text_atomically(args.json, json.dumps(records, indent=2) + "\n")
        errors = sum("error" in r for r in records)
        unusable += errors
        print(
            f"{len(records)} images, {sum(len(r['faces']) for r in records)} faces, {errors} unreadable -> {args.json}"
        )
    if csv_inputs:
        tables = []
        for path in csv_inputs:
            try:
                table = predict_csv(pipe, path)
            except FerDataError as err:  # the whole file is unreadable: say so in its one row, go on with the rest
                print(f"error: {err}", file=sys.stderr)
                table = pd.DataFrame([{"error": str(err)}])
            table.insert(0, "source", cli.printable(path))
            tables.append(table)
        merged = pd.concat(tables, ignore_index=True).reindex(columns=["source", *CSV_COLUMNS])
        merged["line"] = merged["line"].astype("Int64")  # an unreadable file's row has none; keep the rest integers
        cli.write_output(args.csv_out, lambda partial: merged.to_csv(partial, index=False))
        bad = int((merged["error"].fillna("") != "").sum())
        unusable += bad
        print(f"{len(merged)} CSV rows, {bad} malformed -> {args.csv_out}")
    return cli.PARTIAL_FAILURE if unusable else 0


if __name__ == "__main__":
    cli.run(main)
