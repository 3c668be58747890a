"""Weighted softmax ensemble of the emotion classifiers, its weight fitted on PublicTest.

`weights/ensemble.json` names the member checkpoints, their weights and the test-time augmentation set
(`fer_core.tta`; "none" unless a set measurably helped on PublicTest).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_core.checkpoint import CheckpointError, is_number
from fer_core.classifier import EmotionClassifier, prepare_batch
from fer_core.cli import write_text_atomically
from fer_core.export import file_sha256
from fer_core.tta import NO_TTA, tta_from_spec, tta_views

ENSEMBLE_KEY = "ensemble"
ENSEMBLE_FILE = "ensemble.json"


def normalised(weights: Mapping[str, float]) -> dict[str, float]:
    """Non-negative weights scaled to sum to 1, in float64 and by a power of two first (exact), so that weights of
    1e-50 or 1e308 neither underflow nor overflow: mixed in float32 as they were, every face came out NaN."""
    largest = max(weights.values(), default=0.0)
    if not largest > 0:
        raise ValueError(f"ensemble weights must have a positive sum, got {dict(weights)}")
    exponent = math.frexp(largest)[1]
    scaled = {name: math.ldexp(weight, -exponent) for name, weight in weights.items()}
    total = sum(scaled.values())
    return {name: weight / total for name, weight in scaled.items()}


def combine(probs_by_model: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """sum_i w_i p_i / sum_i w_i: still a probability distribution for any non-negative weights (`normalised`)."""
    shares = normalised({name: weights[name] for name in probs_by_model})
    return np.asarray(sum(shares[name] * probs for name, probs in probs_by_model.items()))


def fit_weight(
    probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray, grid: Sequence[float] | None = None
) -> tuple[float, list[dict[str, float]]]:
    """Grid-search w in p = w p_a + (1-w) p_b for accuracy (ties: lower NLL, then w nearest 0.5)."""
    weights = np.round(np.linspace(0.0, 1.0, 21), 4) if grid is None else np.asarray(grid)
    curve = []
    for w in weights:
        probs = w * probs_a + (1 - w) * probs_b
        accuracy = float((probs.argmax(1) == labels).mean())
        nll = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
        curve.append({"weight": float(w), "accuracy": accuracy, "nll": nll})
    best = max(curve, key=lambda row: (row["accuracy"], -row["nll"], -abs(row["weight"] - 0.5)))
    return best["weight"], curve


@dataclass
class Ensemble:
    """The member classifiers and how to mix them."""

    members: list[EmotionClassifier]
    weights: dict[str, float]
    tta: str = NO_TTA
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Fail at construction, not at the first prediction: an unknown TTA set, or weights that do not name the
        members (a misspelt name in `with_weights` changed nothing, silently) or are negative."""
        tta_views(self.tta)
        if set(self.weights) != set(self.names):
            raise ValueError(f"ensemble weights name {sorted(self.weights)}; the members are {self.names}")
        if any(not weight >= 0 for weight in self.weights.values()):
            raise ValueError(f"ensemble weights must be non-negative numbers, got {self.weights}")

    @property
    def shipped_tta(self) -> str:
        """The TTA set ensemble.json chose on PublicTest (what "TTA on" means in the app and CLIs)."""
        return tta_from_spec(self.spec)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    @classmethod
    def load(cls, weights_dir: str | Path, runtime: str = "auto", device: str = "cpu") -> Ensemble:
        folder = Path(weights_dir)
        spec = read_spec(folder, check_files=False)  # checked below, on the bytes each network is built from
        members = [EmotionClassifier.load(folder / m["file"], runtime=runtime, device=device) for m in spec["models"]]
        for entry, member in zip(spec["models"], members, strict=True):
            check_member_file(member.path, entry.get("sha256"), folder / ENSEMBLE_FILE, actual=member.sha256)
        names = [member.name for member in members]
        if len(set(names)) != len(names) or ENSEMBLE_KEY in names:
            raise CheckpointError(
                f"{folder / ENSEMBLE_FILE}: members are named {names}; each needs its own name, and not "
                f"{ENSEMBLE_KEY!r} (their probabilities are keyed by name): train one with --name"
            )
        for entry, name in zip(spec["models"], names, strict=True):
            if entry["name"] != name:  # figures and the card are keyed by the spec's names, predictions by these
                raise CheckpointError(
                    f"{folder / ENSEMBLE_FILE}: names {entry['file']} {entry['name']!r}, but the checkpoint is "
                    f"{name!r}; run python -m fer_core.fit_ensemble again for these files"
                )
        weights = {member.name: float(m["weight"]) for member, m in zip(members, spec["models"], strict=True)}
        return cls(members, weights, tta_from_spec(spec), spec)

    def with_weights(self, weights: Mapping[str, float]) -> Ensemble:
        """A copy sharing the loaded models, mixed differently: to re-run faces at another weight in a notebook.
        (The app's weight slider needs no new run: it re-mixes the stored per-model probabilities with `combine`.)"""
        return Ensemble(self.members, {**self.weights, **weights}, self.tta, self.spec)

    def with_tta(self, enabled: bool | str) -> Ensemble:
        """A copy sharing the loaded models with the shipped TTA set (True), none (False) or a named set.

        TTA multiplies the classifier time by its number of views, which live video may not afford (the app
        turns it off there by default)."""
        name = enabled if isinstance(enabled, str) else (self.shipped_tta if enabled else NO_TTA)
        return Ensemble(self.members, dict(self.weights), name, self.spec)

    def predict_batch(self, batch_uint8: np.ndarray) -> dict[str, np.ndarray]:
        """Per-member and ensemble probabilities for one batch: one runtime call per member."""
        per_model = {m.name: m.predict_batch(batch_uint8, self.tta) for m in self.members}
        return {ENSEMBLE_KEY: combine(per_model, self.weights), **per_model}

    def predict(self, crops: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        size = self.members[0].config.input_size
        return self.predict_batch(prepare_batch(crops, size))


def read_spec(folder: Path, *, check_files: bool = True) -> dict[str, Any]:
    """`folder/ensemble.json`, checked before anything acts on it (the app, `evaluate`, `export`, the model card):
    each member a file entry with a name and a number for its weight, the weights non-negative with a positive
    sum, a known TTA set, and each member file still the one it was fitted with. A hand-edited or damaged file is
    named.

    `check_files=False` leaves the member files unread, for `Ensemble.load`: it checks the bytes it builds each
    network from, so hashing the files here too read two 16 MB files twice on every app start."""
    spec_path = folder / ENSEMBLE_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path}: no ensemble description; train and fit the ensemble first")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{spec_path}: not valid JSON ({err}); fit_ensemble writes this file") from err
    if not isinstance(spec, dict) or not isinstance(spec.get("models"), list) or not spec["models"]:
        raise CheckpointError(f"{spec_path}: expected an object with a non-empty 'models' list")
    for number, entry in enumerate(spec["models"], start=1):
        weight = entry.get("weight") if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("file"), str)
            or not isinstance(entry.get("name"), str)
            or not is_number(weight)
        ):
            raise CheckpointError(
                f"{spec_path}: model {number} needs a 'file', a 'name' and a numeric 'weight', got {json.dumps(entry)}"
            )
        if entry.get("sha256") is not None and not isinstance(entry["sha256"], str):  # was a TypeError traceback
            raise CheckpointError(
                f"{spec_path}: model {number} ({entry['name']}) has sha256 {json.dumps(entry['sha256'])}; expected "
                f"the hex digest of {entry['file']} as a string: run python -m fer_core.fit_ensemble again"
            )
    weights = [float(entry["weight"]) for entry in spec["models"]]
    if not all(np.isfinite(w) and w >= 0 for w in weights) or not sum(weights) > 0:
        raise CheckpointError(f"{spec_path}: weights {weights} must be non-negative with a positive sum")
    try:
        tta_from_spec(spec)
    except ValueError as err:
        raise CheckpointError(f"{spec_path}: {err}") from err
    if check_files:
        for entry in spec["models"]:
            check_member_file(folder / entry["file"], entry.get("sha256"), spec_path)
    return spec


def check_member_file(path: Path, expected_sha256: str | None, spec_path: Path, actual: str | None = None) -> None:
    """A member file replaced after the fit would run with weights and TTA fitted for another network.
    `actual`: the hash of the bytes already loaded, when the network is built (the file may have changed since)."""
    if expected_sha256 is None or (actual is None and not path.is_file()):
        return  # a spec without hashes (hand-written), or a missing file, which loading reports
    actual = actual or file_sha256(path)
    if actual != expected_sha256:
        raise CheckpointError(
            f"{path}: sha256 {actual[:12]} is not the {expected_sha256[:12]} that {spec_path} was fitted with; "
            "run python -m fer_core.fit_ensemble again for this pair"
        )


def weights_used(spec: dict[str, Any], folder: Path, tta: str, *, recorded_hashes: bool = False) -> dict[str, Any]:
    """Which networks (sha256 of the member files), mixing weights and TTA set make these predictions: what
    `evaluate` records beside its figures and what the model card checks them against.

    `recorded_hashes` takes the sha256s `ensemble.json` records instead of hashing the files again: for an
    `Ensemble` that `load` has already checked them against (the app, on every rerun).
    """

    def sha256(entry: dict[str, Any]) -> str:
        return (recorded_hashes and entry.get("sha256")) or file_sha256(folder / entry["file"])

    return {
        "tta": tta,
        "members": {entry["name"]: sha256(entry) for entry in spec["models"]},
        "mix": {entry["name"]: float(entry["weight"]) for entry in spec["models"]},
    }


def write_spec(path: str | Path, spec: dict[str, Any]) -> None:
    write_text_atomically(Path(path), json.dumps(spec, indent=2) + "\n")
