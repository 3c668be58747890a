"""Evaluate each shipped classifier and the ensemble on a FER-2013 split.

    python -m fer_core.evaluate --data ../shared/data/fer2013 --split PrivateTest --out reports/private

Writes DIR/metrics.json ({"split", "n", "models": {name: {accuracy, macro_f1, per_class, confusion}}, "skipped",
"weights": {"tta", "members": {name: sha256}, "mix": {name: weight}}}, plus "warning" where the split was carved
from Training), one confusion-matrix PNG per model and DIR/predictions.csv (per-image ensemble probabilities).
"weights" is `ensemble.weights_used`'s record: the app and the model card show a metrics file only beside the
weights, mix and TTA set it names.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from fer_core import cli
from fer_core.data import FerSplit, load_fer2013
from fer_core.ensemble import ENSEMBLE_KEY, Ensemble, read_spec, weights_used
from fer_core.labels import EMOTIONS, SPLITS, TEST_SPLIT, VAL_SPLIT
from fer_core.metrics import classification_report
from fer_core.pipeline import DEFAULT_WEIGHTS


def predict_split(
    ensemble: Ensemble, split: FerSplit, batch_size: int = 512, progress: bool = True
) -> dict[str, np.ndarray]:
    """Probabilities of every member and the ensemble for all images of a split."""
    chunks: dict[str, list[np.ndarray]] = {}
    starts = range(0, len(split), batch_size)
    for start in tqdm(starts, desc=f"predict {split.name}", disable=not progress, leave=False):
        batch = split.images[start : start + batch_size][:, None]
        for name, probs in ensemble.predict_batch(np.ascontiguousarray(batch)).items():
            chunks.setdefault(name, []).append(probs)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def evaluate_probs(split: FerSplit, probs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "split": split.name,
        "n": len(split),
        "models": {name: classification_report(split.labels, p) for name, p in probs.items()},
    }


def save_confusion_png(confusion: list[list[int]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ConfusionMatrixDisplay(np.asarray(confusion), display_labels=list(EMOTIONS)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: The files `write_report` writes into --out after one confusion_<model>.png per model.
TABLE_NAMES = ("predictions.csv", "metrics.json")


def confusion_png_name(model: str) -> str:
    return f"confusion_{model}.png"


def output_names(models: Iterable[str]) -> list[str]:
    """Every file `write_report` writes into --out for these models (the members and the ensemble)."""
    return [*map(confusion_png_name, models), *TABLE_NAMES]


def write_report(report: dict[str, Any], split: FerSplit, probs: dict[str, np.ndarray], out: Path) -> None:
    """metrics.json last and whole, or none: an interrupted run left a truncated one, or a new one beside an
    earlier run's predictions.csv (perhaps of another split)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # no earlier metrics beside this run's plots and predictions
    for name, scores in report["models"].items():
        title = f"{name} on {split.name}: acc {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}"
        cli.write_output(out / confusion_png_name(name), partial(save_confusion_png, scores["confusion"], title))
    ensemble = probs[ENSEMBLE_KEY]
    table = pd.DataFrame(ensemble, columns=list(EMOTIONS))
    table.insert(0, "predicted", [EMOTIONS[i] for i in ensemble.argmax(1)])
    table.insert(0, "label", [EMOTIONS[i] for i in split.labels])
    table.insert(0, "source", [cli.printable(source) for source in split.sources])
    cli.write_text_atomically(out / "predictions.csv", table.to_csv(index=False))
    cli.write_text_atomically(out / "metrics.json", json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = cli.argument_parser("evaluate", __doc__)
    parser.add_argument("--data", required=True, help="FER-2013 CSV (.csv, .gz, .xz, .zip) or Kaggle-style folder")
    parser.add_argument(
        "--split",
        default=TEST_SPLIT,
        choices=SPLITS,
        help=f"split to score: {TEST_SPLIT} for the final figures; {VAL_SPLIT} selected the models and weights",
    )
    parser.add_argument(
        "--out", type=cli.out_folder, required=True, help="folder for metrics.json, predictions.csv and the plots"
    )
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="folder with ensemble.json")
    cli.add_runtime_option(parser)
    cli.add_skip_bad_option(parser)
    parser.add_argument(
        "--tta", choices=("shipped", "off"), default="shipped", help="shipped: ensemble.json's TTA set; off: one view"
    )
    args = parser.parse_args(argv)
    members = [entry["name"] for entry in read_spec(args.weights, check_files=False)["models"]]
    cli.prepare_out_folder(args.out, output_names([*members, ENSEMBLE_KEY]))  # before the data and the predictions
    dataset = load_fer2013(args.data, skip_bad=args.skip_bad)
    split = dataset[args.split]
    ensemble = Ensemble.load(args.weights, runtime=args.runtime)
    if args.tta == "off":
        ensemble = ensemble.with_tta(False)
    carved = dataset.validation_warning(args.data) if args.split == VAL_SPLIT else None
    if carved:
        print(f"warning: {carved}", file=sys.stderr)
    probs = predict_split(ensemble, split)
    report = {
        **evaluate_probs(split, probs),
        "skipped": dataset.skipped_count,  # --skip-bad: rows/files of the source left out (all splits)
        "weights": weights_used(ensemble.spec, args.weights, ensemble.tta),
        **({"warning": carved} if carved else {}),
    }
    write_report(report, split, probs, args.out)
    for name, scores in report["models"].items():
        print(f"{name:>12}: accuracy {scores['accuracy']:.4f}  macro-F1 {scores['macro_f1']:.4f}  (n={report['n']})")
    print(f"wrote {args.out / 'metrics.json'}")


if __name__ == "__main__":
    cli.run(main)
