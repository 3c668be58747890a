"""Write weights/MODEL_CARD.md from the files it describes, so every number in it is measured.

    python -m fer_core.model_card --weights weights

Reads ensemble.json, metrics_<split>.json (from `fer_core.evaluate`), each checkpoint's metadata
and the sha256 of every shipped file; sections in `weights/card/*.md` (hand-written notes such as
the detector's) are appended as they are. A section may name the files it tells about on a line of
its own, `<!-- describes: A_crp.pt 91446317e524, B_mixcut.pt acfec09e3cf7 -->` (file, first hex
digits of its sha256): when the folder's files differ, as after a user fits their own members, the
section is marked out of date in the card and a warning says so (the line itself is left out).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fer_core import cli
from fer_core.checkpoint import read_checkpoint
from fer_core.cli import UserInputError
from fer_core.ensemble import ENSEMBLE_FILE, read_spec, weights_used
from fer_core.export import file_sha256
from fer_core.labels import EMOTIONS
from fer_core.tta import tta_from_spec, tta_set

INTENDED_USE = """\
## Intended use and limits
- A demo and research tool for facial-expression recognition on photos and live video. It estimates
  the *displayed* expression of a face in one of FER-2013's 7 classes; it does not read anyone's
  feelings, and must not be used to judge people (hiring, policing, health, education, security).
- FER-2013 faces are 48x48 grayscale, mostly frontal, web-sourced, with noisy labels (human accuracy
  is about 65 %) and skewed demographics; expect lower accuracy on profiles, occlusions, poor light,
  children and under-represented groups. `disgust` has only 436 training images.
- Licences: FER-2013 (ICML 2013 challenge data) for research; WIDER FACE is licensed for
  non-commercial research use only, so weights trained on it inherit that restriction.
"""


def pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f} %"


#: Decimals of the evaluation tables' accuracies: at one, 69.96 % would print as 70.0 % beside a 70 % target.
ACCURACY_DIGITS = 2


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| model | accuracy | macro-F1 | " + " | ".join(f"F1 {e}" for e in EMOTIONS) + " |",
        "|---|---|---|" + "---|" * len(EMOTIONS),
    ]
    for name, scores in metrics["models"].items():
        per_class = " | ".join(f"{scores['per_class'][e]['f1']:.2f}" for e in EMOTIONS)
        accuracy = pct(scores["accuracy"], ACCURACY_DIGITS)
        lines.append(f"| {name} | {accuracy} | {scores['macro_f1']:.3f} | {per_class} |")
    return lines


def weakest_classes(metrics: dict[str, Any], model: str = "ensemble", count: int = 2) -> str:
    """The lowest-recall classes and where their faces go instead, from the confusion matrix."""
    confusion = np.asarray(metrics["models"][model]["confusion"], dtype=float)
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)  # row i: where true class i went
    recall = np.diag(rates)
    mistakes = rates - np.diag(recall)
    present = np.flatnonzero(confusion.sum(1) > 0)  # a class with no faces in the split has no recall at all
    parts = []
    for cls in present[np.argsort(recall[present], kind="stable")][:count]:
        other = int(mistakes[cls].argmax())
        parts.append(
            f"`{EMOTIONS[cls]}` ({pct(recall[cls])} recall; {pct(rates[cls, other])} taken for `{EMOTIONS[other]}`)"
        )
    return f"Weakest classes of the {model} on {metrics['split']}: " + " and ".join(parts) + "."


def device_label(meta: dict[str, Any]) -> str:
    """Where a stage trained: a GPU's own name, or "CPU" with its thread count (the metadata records "cpu")."""
    device = meta.get("device", "?")
    if device != "cpu":
        return device
    threads = meta.get("train_config", {}).get("threads")
    return f"CPU, {threads} threads" if threads else "CPU"


def duration(seconds: float) -> str:
    """Training time in words: seconds under a minute, so a short GPU stage does not read "0 min"."""
    return f"{seconds:.0f} s" if seconds < 59.5 else f"{seconds / 60:.0f} min"


def effort(meta: dict[str, Any]) -> str:
    """Epochs, device and wall time of one training stage, from its checkpoint metadata."""
    return f"{meta.get('epoch', '?')} epochs on {device_label(meta)} ({duration(meta.get('train_seconds', 0))})"


def stage_summary(meta: dict[str, Any]) -> str:
    """One training stage in words: its effort and, for a distilled stage, its teacher."""
    text = effort(meta)
    train = meta.get("train_config", {})
    if train.get("schedule") == "swa":
        text += (
            f", stochastic weight averaging: the mean of the weights at each epoch's end, constant LR {train['lr']:g}"
            f" after warm-up, batch {train['batch_size']}, batch-norm statistics recomputed"
        )
    teacher = meta.get("distilled_from")
    if teacher:
        members = " + ".join(f"`{name}` (sha256 {sha[:12]})" for name, sha in teacher.get("members", {}).items())
        text += (
            f", distilled from the ensemble of {members} with TTA `{teacher.get('tta', '?')}`"
            f" (target = {1 - teacher['alpha']:.2g} x label + {teacher['alpha']:.2g} x teacher)"
        )
    return text


def lineage(meta: dict[str, Any]) -> list[str]:
    """Every stage of a model, oldest first: a fine-tuned checkpoint names its parent in `fine_tuned_from`."""
    stages, parent = [stage_summary(meta)], meta.get("fine_tuned_from")
    while parent:
        stages.append(
            f"{parent.get('recipe', '?')}, {effort(parent)}, saved as `{parent.get('file', '?')}` "
            f"(sha256 {str(parent.get('sha256', ''))[:12]})"
        )
        parent = parent.get("parent")
    return stages[::-1]


SCHEDULE_TEXT = {"onecycle": "OneCycle LR with warm-up", "swa": "a constant LR after warm-up with weight averaging"}


def recipe_text(train_configs: dict[str, dict[str, Any]]) -> str:
    """The optimiser, schedule and loss of the members' last stages, read from their own training configs: a value
    they share is said once, others per file (a checkpoint without the knob ran before it existed: "OneCycle")."""

    def shared(key: str, show: Callable[[Any], str]) -> str:
        shown = {file: show(config.get(key)) for file, config in train_configs.items()}
        if len(set(shown.values())) == 1:
            return next(iter(shown.values()))
        return " / ".join(f"{text} (`{file}`)" for file, text in shown.items())

    def known(value: Any) -> str:
        return "not recorded" if value is None else str(value)

    def loss(power: Any) -> str:
        if power is None:
            return "cross-entropy (class weighting not recorded)"
        return f"class-weighted cross-entropy (frequency^-{power}: lifts `disgust`)" if power else "cross-entropy"

    return (
        f"Recipe: AdamW (weight decay {shared('weight_decay', known)}, on weights only), "
        f"{shared('schedule', lambda name: SCHEDULE_TEXT.get(name or 'onecycle', str(name)))}, "
        f"label smoothing {shared('label_smoothing', known)}, {shared('class_weight_power', loss)}, "
        "batch augmentation on the device."
    )


def render(weights: Path) -> str:
    spec = read_spec(weights)
    out = [
        "# Model card: FER ensemble (2 x EfficientNet-B0) and face detector",
        "",
        "Generated by `python -m fer_core.model_card --weights weights` from the files in this folder.",
        "",
    ]
    out += [
        "## Classifiers",
        "",
        "| file | recipe | epochs | input | device | train time | PublicTest acc (at save) |",
        "|---|---|---|---|---|---|---|",
    ]
    checkpoints = {m["file"]: read_checkpoint(weights / m["file"]) for m in spec["models"]}  # each file read once
    for member in spec["models"]:
        checkpoint = checkpoints[member["file"]]
        meta, config = checkpoint["meta"], checkpoint["model_config"]
        train = meta.get("train_config", {})
        stem = f"{config['input_size']} px gray, stem stride {config['stem_stride']}"
        out.append(
            f"| `{member['file']}` | {meta.get('recipe', '?')} "
            f"| {meta.get('epoch', '?')} of {train.get('epochs', '?')} | {stem} | {device_label(meta)} "
            f"| {duration(meta.get('train_seconds', 0))} | {pct(meta.get('metrics', {}).get('val_acc', 0))} |"
        )
    staged = {name: c["meta"] for name, c in checkpoints.items() if c["meta"].get("fine_tuned_from")}
    if staged:
        out += ["", "The table shows each model's last training stage. Their stages, oldest first:", ""]
        for name, meta in staged.items():
            out.append(f"- `{name}`:")
            out += [f"  {i}. {text}" for i, text in enumerate(lineage(meta), start=1)]
    first = spec["models"][0]
    out += [
        "",
        recipe_text({file: c["meta"].get("train_config", {}) for file, c in checkpoints.items()})
        + f" Training config of `{first['file']}`:",
        "",
        "```json",
        json.dumps(checkpoints[first["file"]]["meta"].get("train_config", {}), indent=1),
        "```",
        "",
    ]
    out += [
        "## Ensemble",
        "",
        "Weighted average of the members' softmax outputs; weight grid-searched on PublicTest "
        "(step 0.05) for each test-time augmentation set (`fer_core.tta`); the set with the best PublicTest "
        "accuracy is shipped (the cheaper one on a tie).",
        "",
    ]
    out += [f"- `{m['name']}`: weight {m['weight']}" for m in spec["models"]]
    tta = tta_from_spec(spec)
    chosen = tta_set(tta)
    out.append(f"- test-time augmentation: `{tta}`, {len(chosen.views)} views per face ({chosen.description})")
    public = spec.get("public_test")  # a hand-edited `null` or list is no figures, not an AttributeError
    by_tta = public.get("ensemble_accuracy_by_tta") if isinstance(public, dict) else None
    if isinstance(by_tta, dict) and by_tta:
        out.append(
            "- PublicTest ensemble accuracy by TTA set: " + ", ".join(f"`{k}` {pct(v)}" for k, v in by_tta.items())
        )
    out.append("")
    expected_weights = weights_used(spec, weights, tta)  # hashed once for both metrics files
    metas = {file: c["meta"] for file, c in checkpoints.items()}
    for split in ("PrivateTest", "PublicTest"):
        path = weights / f"metrics_{split}.json"
        if path.is_file():
            metrics = read_checked_metrics(path, split, expected_weights, weights / ENSEMBLE_FILE, metas)
            command = f"python -m fer_core.evaluate --data FER2013 --split {split} --out DIR"
            out += [f"## {split} (n = {metrics['n']}), from `{command}`", ""]
            out += [*metrics_table(metrics), "", weakest_classes(metrics), ""]
    digests: dict[Path, str] = {}

    def sha256(path: Path) -> str:  # a section's check and the files table hash each file once
        if path not in digests:
            digests[path] = file_sha256(path)
        return digests[path]

    for extra in sorted((weights / "card").glob("*.md")) if (weights / "card").is_dir() else []:
        out += [checked_card_section(extra, weights, sha256), ""]
    out += [INTENDED_USE, "## Files (sha256)", "", "| file | bytes | sha256 |", "|---|---|---|"]
    for path in sorted(p for p in weights.iterdir() if p.is_file() and p.name != "MODEL_CARD.md"):
        out.append(f"| `{path.name}` | {path.stat().st_size} | `{sha256(path)}` |")
    return "\n".join(out) + "\n"


def read_card_section(path: Path) -> str:
    """A hand-written section of the card (`weights/card/*.md`), which must be UTF-8 like the card itself."""
    try:
        return path.read_text(encoding="utf-8").rstrip()
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err


#: A card section's record of the files it tells about: `<!-- describes: FILE SHA256-PREFIX, ... -->` on a line of its
#: own (an HTML comment, which markdown viewers hide), each FILE in the weights folder with 8 or more hex digits of its
#: sha256.
DESCRIBES_LINE = re.compile(r"<!--\s*describes:(?P<files>.*?)-->")
_DESCRIBED_FILE = re.compile(r"(?P<file>\S+)\s+(?P<sha>[0-9a-fA-F]{8,64})")


def split_describes_line(path: Path, text: str) -> tuple[str, dict[str, str]]:
    """A section's text without its describes line, and the files that line names with their sha256 prefixes
    (empty when it has none: such a section is not checked)."""
    lines = text.split("\n")
    found = [(i, match) for i, line in enumerate(lines) if (match := DESCRIBES_LINE.fullmatch(line.strip()))]
    if not found:
        return text, {}
    if len(found) > 1:
        raise UserInputError(f"{path}: {len(found)} `<!-- describes: ... -->` lines; keep one")
    index, match = found[0]
    files: dict[str, str] = {}
    for entry in match["files"].split(","):
        named = _DESCRIBED_FILE.fullmatch(entry.strip())
        if named is None:
            raise UserInputError(
                f"{path}:{index + 1}: {entry.strip()!r} in its describes line is not `FILE SHA256-PREFIX` (a file "
                "of the weights folder and 8 or more hex digits of its sha256)"
            )
        files[named["file"]] = named["sha"].lower()
    del lines[index]
    return "\n".join(lines).strip("\n"), files


def checked_card_section(path: Path, weights: Path, sha256: Callable[[Path], str]) -> str:
    """A hand-written section as the card prints it: marked out of date, with a warning on stderr, when the files it
    names are no longer those of the folder. The card's generated parts (hashes, metrics) follow the files, so a
    user's own members got the shipped members' training story and robustness table under their sha256."""
    text, files = split_describes_line(path, read_card_section(path))
    if not files:
        print(
            f"note: {path} names no files it describes (a line <!-- describes: FILE SHA256-PREFIX, ... -->): "
            "not checked against this folder",
            file=sys.stderr,
        )
        return text
    stale = []
    for name, prefix in files.items():
        current = sha256(weights / name) if (weights / name).is_file() else None
        if current is None:
            stale.append(f"`{name}` sha256 {prefix} (no such file here now)")
        elif not current.startswith(prefix):
            stale.append(f"`{name}` sha256 {prefix} (now {current[: len(prefix)]})")
    if not stale:
        return text
    print(
        f"warning: {path} was written for {', '.join(stale)}: MODEL_CARD.md marks it out of date; update the section "
        "and its describes line",
        file=sys.stderr,
    )
    note = (
        f"> **Out of date**: this section was written for {', '.join(stale)}; what it says of those files describes "
        "the earlier ones, not the files this card lists."
    )
    heading, _, rest = text.partition("\n")
    if not heading.startswith("#"):
        return f"{note}\n\n{text}"
    return f"{heading}\n\n{note}\n{rest}" if rest.startswith("\n") else f"{heading}\n\n{note}\n\n{rest}"


def read_checked_metrics(
    path: Path, split: str, expected: dict[str, Any], spec_path: Path, metas: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """An evaluate `metrics.json` that belongs beside these weights (the card and the compare page show only such):
    readable, measured on `split` with these networks, mix and TTA set, and on the split size the members' checkpoints
    record (`metas`: each member's metadata, keyed by the name to quote)."""
    metrics = read_metrics(path)
    check_metrics_belong(metrics, expected, spec_path, path, split)
    check_split_size(metrics, metas, path, split)
    return metrics


def read_metrics(path: Path) -> dict[str, Any]:
    """An evaluate `metrics.json`; a truncated or foreign file is named, not a JSONDecodeError."""
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: not valid JSON ({err}); run python -m fer_core.evaluate again") from err
    if not isinstance(metrics, dict) or not isinstance(metrics.get("models"), dict) or "n" not in metrics:
        raise UserInputError(f"{path}: not a metrics file of python -m fer_core.evaluate")
    return metrics


def check_split_size(metrics: dict[str, Any], metas: dict[str, dict[str, Any]], path: Path, split: str) -> None:
    """Figures of another data set (a sample, another copy of FER-2013) have another face count than the split
    the members were trained beside, as their checkpoints record it."""
    for file, meta in metas.items():
        recorded = meta.get("data_counts", {}).get(split)
        if recorded is not None and recorded != metrics["n"]:
            raise UserInputError(
                f"{path}: measured on {metrics['n']} {split} faces, but `{file}` was trained beside a {split} of "
                f"{recorded}; evaluate on the same data"
            )


def check_metrics_belong(
    metrics: dict[str, Any], expected: dict[str, Any], spec_path: Path, path: Path, split: str
) -> None:
    """Figures measured on another split, other networks, another mix or another TTA set must not be printed under
    these weights and this split's heading."""
    if metrics.get("split") != split:
        raise UserInputError(f"{path}: holds {metrics.get('split')!r} figures, not {split}'s; copy the right file here")
    used = metrics.get("weights")
    if used is None:
        raise UserInputError(f"{path}: does not say which weights it measured; run python -m fer_core.evaluate again")
    if used != expected:
        mix = ", ".join(f"{name} {weight}" for name, weight in used.get("mix", {}).items()) or "an unrecorded mix"
        raise UserInputError(
            f"{path}: measured with TTA {used.get('tta')!r} and {mix} on {sorted(used.get('members', {}))} "
            f"(sha256 {', '.join(h[:12] for h in used.get('members', {}).values())}), not with the weights, mix and "
            f"TTA of {spec_path}; run python -m fer_core.evaluate again and copy its metrics.json here"
        )


def main(argv: list[str] | None = None) -> None:
    parser = cli.argument_parser("model_card", __doc__)
    parser.add_argument(
        "--weights",
        type=Path,
        default=Path("weights"),
        help="the weights folder: ensemble.json, its members, metrics_<split>.json and card/*.md are read there and "
        "MODEL_CARD.md is written there",
    )
    args = parser.parse_args(argv)
    cli.write_text_atomically(args.weights / "MODEL_CARD.md", render(args.weights))
    print(f"wrote {args.weights / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    cli.run(main)
