"""Assemble the shipped ensemble: copy two trained checkpoints, fit the weight on PublicTest.

    python -m fer_core.fit_ensemble --data ../shared/data/fer2013 \
        --models runs/A_crp/best.pt runs/B_mixcut/best.pt --out weights

For every candidate test-time augmentation set (`fer_core.tta.TTA_SETS`: none, flip, flip with small
rotations, zooms or shifts) the weight is a grid search over w in [0, 1] (step 0.05) maximising PublicTest
accuracy; the set that reaches the highest ensemble accuracy is shipped, the cheaper one on a tie.
PrivateTest is never read here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from fer_core import cli
from fer_core.checkpoint import (
    CheckpointError,
    DamagedCheckpointError,
    LoadedClassifier,
    load_classifier,
    model_name_problem,
)
from fer_core.cli import UserInputError
from fer_core.data import CSV_SUFFIXES, FerSplit, load_fer2013
from fer_core.ensemble import ENSEMBLE_FILE, ENSEMBLE_KEY, Ensemble, fit_weight, write_spec
from fer_core.evaluate import predict_split
from fer_core.export import file_sha256
from fer_core.labels import VAL_SPLIT
from fer_core.metrics import summary_metrics
from fer_core.tta import NO_TTA, TTA_SETS


def main(argv: list[str] | None = None) -> None:
    parser = cli.argument_parser("fit_ensemble", __doc__)
    parser.add_argument(
        "--data", required=True, help=f"FER-2013 CSV or Kaggle-style folder; only its {VAL_SPLIT} split is used"
    )
    parser.add_argument(
        "--models",
        nargs=2,
        type=Path,
        required=True,
        metavar="CHECKPOINT",
        help="the two members: classifier checkpoints from python -m fer_core.train (such as runs/A/best.pt), "
        "copied into --out under their model names",
    )
    parser.add_argument(
        "--out",
        type=cli.out_folder,
        default=Path("weights"),
        help="weights folder that receives both checkpoints and ensemble.json",
    )
    cli.add_runtime_option(parser)
    cli.add_skip_bad_option(parser)
    args = parser.parse_args(argv)

    loaded_models = [load_member(source) for source in args.models]
    for source, loaded in zip(args.models, loaded_models, strict=True):
        if problem := model_name_problem(loaded.name):
            parser.error(f"{source}: its model name {loaded.name!r} {problem}; train it with another --name")
    if loaded_models[0].name == loaded_models[1].name:  # one file name and one probability column for both
        parser.error(f"both checkpoints are named {loaded_models[0].name!r}; train one with --name to tell them apart")
    # Before anything is written: a wrong --data changes nothing. Skipped rows are logged by the loader and, when
    # any were, recorded in ensemble.json beside the accuracy they change.
    dataset = load_fer2013(args.data, skip_bad=args.skip_bad)
    val = dataset[VAL_SPLIT]
    if carved := dataset.validation_warning(args.data):
        print(
            f"warning: {carved}; the weight and TTA set fitted on it may favour the member that overfits most",
            file=sys.stderr,
        )
    names = [loaded.name for loaded in loaded_models]
    files = [*(f"{name}.pt" for name in names), ENSEMBLE_FILE]  # ensemble.json last: it vouches for the others
    cli.prepare_out_folder(args.out, files)  # before the fit, not when its results are moved in
    # Fitted in a staging folder beside the output and moved in at the end, so an interrupted refit (many
    # minutes on a CPU) never leaves new checkpoints with an unfitted ensemble.json in a folder the app reads.
    with tempfile.TemporaryDirectory(prefix=".fit_ensemble_", dir=args.out) as staging_dir:
        staging = Path(staging_dir)
        spec = fit(args.models, names, val, staging, args.runtime, carved, dataset.skipped_count)
        move_in_together(staging, args.out, files)
    print(json.dumps({"tta": spec["tta"], "weights": {m["name"]: m["weight"] for m in spec["models"]}}))


def move_in_together(staging: Path, out: Path, names: list[str]) -> None:
    """Move the files `names` from `staging` into `out` (one file system), in order, all or none.

    Each os.replace is atomic, the set is not: a move that failed part-way (a folder made in a name's place during
    the fit) left the new first checkpoint beside the earlier ensemble.json, a folder half replaced. So each file a
    move replaces is first renamed aside into `staging`, and when any move fails (or Ctrl-C comes) every name
    touched gets its earlier file back, or is removed when it had none (renames within one folder: no copies). A
    failed move is one line naming the file and saying that `out` is as it was.
    """
    aside = staging / ".replaced"
    aside.mkdir()
    touched: list[str] = []
    try:
        for name in names:
            touched.append(name)
            if (out / name).is_file() or (out / name).is_symlink():  # not a folder: removed with staging
                os.replace(out / name, aside / name)
            os.replace(staging / name, out / name)
    except BaseException as err:
        for name in reversed(touched):
            if (aside / name).is_file() or (aside / name).is_symlink():
                os.replace(aside / name, out / name)
            elif not (staging / name).exists():  # moved in where there was no file before
                (out / name).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise UserInputError(
                f"{out / touched[-1]}: could not move the fitted file there ({err.strerror or err}); {out} is left "
                "as it was"
            ) from err
        raise


def load_member(source: Path) -> LoadedClassifier:
    """One --models checkpoint. A file of another kind (the data CSV given to --models by mistake) is named with
    what --models takes, which the loader's own words ("not a fer_core classifier checkpoint") cannot say."""
    try:
        return load_classifier(source)
    except CheckpointError as err:
        if not source.is_file():  # "no such checkpoint file" says it all
            raise
        if isinstance(err, DamagedCheckpointError):  # the right kind of file, damaged: what --models takes is known
            raise UserInputError(f"--models {err}") from err
        takes = (
            "--models takes two classifier checkpoints written by python -m fer_core.train, such as "
            "runs/A_crp/best.pt runs/B_mixcut/best.pt"
        )
        if source.name.lower().endswith(CSV_SUFFIXES):
            raise UserInputError(
                f"--models {source}: FER-2013 data, not a checkpoint; {takes} (the data goes to --data)"
            ) from err
        raise UserInputError(f"--models {source}: not a classifier checkpoint; {takes} ({err})") from err


def fit(
    sources: list[Path],
    names: list[str],
    val: FerSplit,
    folder: Path,
    runtime: str,
    warning: str | None = None,
    skipped: int = 0,
) -> dict[str, Any]:
    """Copy the two checkpoints into `folder`, fit weight and TTA set on `val`, write and return ensemble.json
    (with `warning` when `val` is not a real PublicTest, and with `skipped` when --skip-bad left bad rows/files of
    the source out: the accuracy recorded is of the rest)."""
    members: list[dict[str, Any]] = []
    for source, name in zip(sources, names, strict=True):
        target = folder / f"{name}.pt"
        shutil.copyfile(source, target)
        members.append({"name": name, "file": target.name, "weight": 0.5, "sha256": file_sha256(target)})
    spec: dict[str, Any] = {"models": members, "tta": NO_TTA, "selected_on": VAL_SPLIT}
    write_spec(folder / ENSEMBLE_FILE, spec)

    loaded = Ensemble.load(folder, runtime=runtime)
    results: dict[str, dict[str, Any]] = {}
    for tta in TTA_SETS:
        probs = predict_split(loaded.with_tta(tta), val)
        a, b = (probs[m["name"]] for m in members)
        weight, curve = fit_weight(a, b, val.labels)
        best = next(row for row in curve if row["weight"] == weight)
        singles = {m["name"]: summary_metrics(val.labels, probs[m["name"]].argmax(1)) for m in members}
        results[tta] = {"weight": weight, "curve": curve, "accuracy": best["accuracy"], "singles": singles}
        print(
            f"tta={tta}: best weight {weight:.2f} -> PublicTest accuracy {best['accuracy']:.4f}; singles "
            + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in singles.items())
        )
    chosen_tta = max(results, key=lambda name: results[name]["accuracy"])  # first maximum: the cheapest set
    chosen = results[chosen_tta]
    members[0]["weight"], members[1]["weight"] = round(chosen["weight"], 4), round(1 - chosen["weight"], 4)
    spec.update(
        **({"warning": warning} if warning else {}),
        **({"skipped": skipped} if skipped else {}),  # as evaluate's metrics.json: rows/files of the whole source
        tta=chosen_tta,
        public_test={
            "ensemble_accuracy": chosen["accuracy"],
            "ensemble_accuracy_by_tta": {name: r["accuracy"] for name, r in results.items()},
            "singles": chosen["singles"],
            "weight_curve": chosen["curve"],
            ENSEMBLE_KEY + "_weight_of_first": chosen["weight"],
        },
    )
    write_spec(folder / ENSEMBLE_FILE, spec)
    return spec


if __name__ == "__main__":
    cli.run(main)
