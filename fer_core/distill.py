"""Soft labels for knowledge distillation: the shipped ensemble's probabilities on the Training split.

    python -m fer_core.distill --data ../shared/data/fer2013 --teacher weights --out runs/teacher.npz
    python -m fer_core.train ... --init-from weights/A_crp.pt --soft-labels runs/teacher.npz --distill-alpha 0.5

Why: a student that learns from the ensemble's probabilities (with its test-time views) gets the
ensemble's knowledge of which classes look alike, per image, instead of a one-hot label. The labels are
computed once, on the un-augmented Training images, and stored with the data fingerprint so a run can
refuse labels made for other data. Only Training is read: PublicTest still selects, PrivateTest still reports.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_core import cli
from fer_core.data import FerDataset, load_fer2013
from fer_core.ensemble import ENSEMBLE_KEY, Ensemble
from fer_core.evaluate import predict_split
from fer_core.labels import EMOTIONS, TRAIN_SPLIT
from fer_core.metrics import summary_metrics
from fer_core.tta import NO_TTA, TTA_SETS


@dataclass(frozen=True)
class SoftLabels:
    """Teacher probabilities (N, 7) for the Training split of the data with `fingerprint`."""

    probs: np.ndarray
    fingerprint: str
    teacher: dict

    def save(self, path: str | Path) -> None:
        """Written beside the target, then moved over it (`cli.write_output`): Ctrl-C during minutes of teacher
        predictions left a truncated file that `train --soft-labels` met with a traceback."""

        def write(partial: Path) -> None:
            with open(partial, "wb") as handle:  # a handle: no .npz added
                np.savez_compressed(
                    handle,
                    probs=self.probs.astype(np.float32),
                    fingerprint=self.fingerprint,
                    teacher=json.dumps(self.teacher),
                )

        cli.write_output(Path(path), write)  # a write that fails is one line naming the file, not a traceback

    @classmethod
    def load(cls, path: str | Path) -> SoftLabels:
        if not Path(path).exists():  # not "not a soft-label file": the name was mistyped, or the file is elsewhere
            raise ValueError(f"{path}: no such file (soft labels are made by `python -m fer_core.distill --out`)")
        try:
            with np.load(path, allow_pickle=False) as stored:
                return cls(stored["probs"], str(stored["fingerprint"]), json.loads(str(stored["teacher"])))
        except (OSError, KeyError, ValueError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as error:
            # TypeError: a bare .npy array; EOFError: an empty file; BadZipFile: a truncated one
            raise ValueError(f"{path}: not a soft-label file from `python -m fer_core.distill` ({error})") from error

    def check(self, fingerprint: str, count: int, path: str | Path) -> None:
        """Refuse labels made for other data: they would teach the wrong image's probabilities."""
        if self.fingerprint != fingerprint:
            raise ValueError(f"{path}: soft labels were made for other training data (fingerprint differs)")
        if self.probs.shape != (count, len(EMOTIONS)):
            raise ValueError(f"{path}: soft labels have shape {self.probs.shape}, expected ({count}, {len(EMOTIONS)})")


def blend_targets(labels: torch.Tensor, soft: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) one-hot + alpha teacher: a probability target per image (rows sum to 1)."""
    one_hot = torch.nn.functional.one_hot(labels, soft.shape[1]).to(soft.dtype)
    return (1.0 - alpha) * one_hot + alpha * soft


def make_soft_labels(
    dataset: FerDataset, teacher_dir: str | Path, tta: str = "shipped", runtime: str = "auto"
) -> SoftLabels:
    """Run the teacher ensemble over the Training split (with its shipped TTA set unless told otherwise)."""
    ensemble = Ensemble.load(teacher_dir, runtime=runtime)
    ensemble = ensemble.with_tta(True if tta == "shipped" else tta)
    probs = predict_split(ensemble, dataset[TRAIN_SPLIT])[ENSEMBLE_KEY]
    return SoftLabels(probs.astype(np.float32), dataset.fingerprint(), teacher_identity(ensemble))


def teacher_identity(ensemble: Ensemble) -> dict:
    """What makes a teacher: its members' sha256s, their weights and its TTA set (stored with the soft labels)."""
    return {
        "members": {m["name"]: m.get("sha256", "") for m in ensemble.spec.get("models", [])},
        "weights": ensemble.weights,
        "tta": ensemble.tta,
    }


def one_view_named_off(text: str) -> str:
    """--tta's one view is `off`, as in evaluate and predict; the set's own name `none` (offered too, once) is
    still read, but not shown: two spellings of one choice read as two choices."""
    return "off" if text == NO_TTA else text


def main(argv: list[str] | None = None) -> None:
    parser = cli.argument_parser("distill", __doc__)
    parser.add_argument(
        "--data",
        required=True,
        help="FER-2013 CSV or Kaggle-style folder: the one the student trains on (its Training split is labelled)",
    )
    parser.add_argument("--teacher", type=Path, default=Path("weights"), help="folder with ensemble.json")
    parser.add_argument("--out", type=cli.out_file, required=True, help="soft-label file to write (.npz)")
    parser.add_argument(
        "--tta",
        default="shipped",
        type=one_view_named_off,
        choices=("shipped", "off", *(name for name in TTA_SETS if name != NO_TTA)),
        help="teacher TTA set: shipped (ensemble.json's), off (one view, as in the other tools) or a named set",
    )
    cli.add_runtime_option(parser, "the teacher's classifiers")
    cli.add_skip_bad_option(parser)
    args = parser.parse_args(argv)
    if args.out.suffix != ".npz":  # numpy would add it, and the file written would not be the one named
        parser.error(f"--out {args.out}: give a .npz file name (the soft labels are a NumPy .npz archive)")
    # A folder mkdir cannot make (/sys lets root past os.access) was a traceback after the teacher's predictions.
    cli.prepare_out_folder(args.out.parent, ())
    dataset = load_fer2013(args.data, skip_bad=args.skip_bad)  # the same rows as train's: the fingerprint checks it
    soft = make_soft_labels(dataset, args.teacher, NO_TTA if args.tta == "off" else args.tta, args.runtime)
    soft.save(args.out)
    agreement = summary_metrics(dataset[TRAIN_SPLIT].labels, soft.probs.argmax(1))["accuracy"]
    print(
        f"wrote {args.out}: {len(soft.probs)} Training images, teacher {soft.teacher}, agrees with the labels on "
        f"{agreement:.4f}, mean top probability {soft.probs.max(1).mean():.3f}"
    )


if __name__ == "__main__":
    cli.run(main)
