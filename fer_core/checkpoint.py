"""Checkpoint files: weights plus the metadata that says how to use them, loaded safely.

A checkpoint is a plain dict (so `torch.load(weights_only=True)` can read it):
`{"format", "model_config", "state_dict", "meta"}` and, for resumable training files, `"training"`.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_core import __version__, cli
from fer_core.cli import UserInputError
from fer_core.labels import EMOTIONS
from fer_core.models import ModelConfig, build_model

CHECKPOINT_FORMAT = "fer_core.classifier/1"


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot name an ensemble member, whose file in a weights folder is `<name>.pt`, or None: a name with
    a path separator failed `fit_ensemble` with a raw "[Errno 2]", and an empty one shipped a hidden `.pt`."""
    if not name or name.startswith(".") or any(char in name for char in "/\\:\0"):
        return "cannot name a model file (empty, starting with '.', or holding '/', '\\', ':')"
    return None


class CheckpointError(UserInputError):
    """A file is not a usable classifier checkpoint; the message says why."""


class DamagedCheckpointError(CheckpointError):
    """A file that begins as a torch.save archive but cannot be read: damaged or cut short (a copy that stopped
    part-way), not a file of another kind."""


#: How every zip archive, torch.save's included, begins (the first local file header).
ZIP_MAGIC = b"PK\x03\x04"


def damaged_archive_problem(data: bytes) -> str | None:
    """Why the bytes of a file cannot be read where they begin as a zip archive (as torch.save's do) but are no
    whole one (the central directory at its end is missing or broken, as in a truncated copy), in torch's words;
    None for a whole archive or a file that is no archive at all."""
    if not data.startswith(ZIP_MAGIC) or zipfile.is_zipfile(io.BytesIO(data)):
        return None
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        reason = "zipfile finds no central directory"  # torch read it all the same: said in Python's words
    except Exception as err:  # torch's RuntimeError runs to several sentences ("internal miniz error. If ...")
        reason = first_sentence(str(err)) or type(err).__name__
    return f"looks like a torch.save archive but cannot be read (damaged or truncated?: {reason})"


def first_sentence(text: str) -> str:
    """The first line of `text`, cut at its first ". " (torch's errors go on with advice on one long line)."""
    lines = text.strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else ""


@dataclass(frozen=True)
class LoadedClassifier:
    """A ready-to-run model (eval mode, CPU) with the metadata of the file it came from."""

    model: nn.Module
    config: ModelConfig
    meta: dict[str, Any]
    path: Path
    #: Of the very bytes the model was built from: a cache keyed on the file's hash read later could pair the
    #: file that replaced this one with this network.
    sha256: str

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.stem))


def code_version(folder: Path = Path(__file__).parent) -> str:
    """Package version plus the git commit when running from a checkout, and `.dirty` when tracked files differ
    from that commit: a run trained with uncommitted changes must not claim the commit's code."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=folder, capture_output=True, text=True, timeout=5, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    sha = git("rev-parse", "--short", "HEAD")
    if not sha:
        return __version__
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")  # the package's own files
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}"


def build_checkpoint(
    model: nn.Module, config: ModelConfig, meta: dict[str, Any], training: dict[str, Any] | None = None
) -> dict[str, Any]:
    state = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
    checkpoint: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model_config": config.to_dict(),
        "state_dict": state,
        "meta": {"created": datetime.now(UTC).isoformat(timespec="seconds"), **meta},
    }
    if training is not None:
        checkpoint["training"] = training
    return checkpoint


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically so an interrupted run never leaves a half-written `last.pt`; a full disk is one error line
    naming the file (torch's own was a RuntimeError from its C++ writer, and a partial file stayed behind)."""

    def write(partial: Path) -> None:
        try:
            torch.save(checkpoint, partial)
        except RuntimeError as err:  # PytorchStreamWriter failed writing file ...: a full disk or a size limit
            raise OSError(f"writing failed: {str(err).splitlines()[0]}") from err

    cli.write_output(Path(path), write)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate the dict; never unpickles arbitrary objects."""
    return read_checkpoint_hashed(path)[0]


def read_checkpoint_hashed(path: str | Path) -> tuple[dict[str, Any], str]:
    """`read_checkpoint` plus the sha256 of the bytes it was read from (read once, so the two always agree)."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"{source}: no such checkpoint file")
    try:
        data = source.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{source}: cannot read ({err.strerror})") from err
    if problem := damaged_archive_problem(data):
        raise DamagedCheckpointError(f"{source}: {problem}")
    if not zipfile.is_zipfile(io.BytesIO(data)):  # torch.save's archive: a CSV's unpickling error said nothing
        raise CheckpointError(
            f"{source}: not a fer_core classifier checkpoint (those are torch.save zip archives; this file begins "
            f"with {data[:12]!r}); `python -m fer_core.train` writes them"
        )
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or corrupt files
        # torch's text runs to several lines and advises weights_only=False, which this project never does
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"{source}: not a readable fer_core classifier checkpoint ({type(err).__name__}: {first_line})"
        ) from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{source}: not a fer_core classifier checkpoint (format {found!r})")
    for key in ("model_config", "state_dict", "meta"):
        if key not in checkpoint:
            raise CheckpointError(f"{source}: checkpoint lacks {key!r}")
    check_model_config(checkpoint["model_config"], source)
    return checkpoint, hashlib.sha256(data).hexdigest()


def check_model_config(config: Any, source: Path) -> None:
    """Every `ModelConfig` field present and of its kind: a missing one was filled with today's default (another
    normalisation, class order or input size, silently), a wrong kind ended in a bare AttributeError."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: model_config is a {type(config).__name__}, not a mapping")
    missing = [name for name in ModelConfig.__dataclass_fields__ if name not in config]
    if missing:
        raise CheckpointError(f"{source}: model_config lacks {missing}; it cannot be rebuilt as it was trained")

    def numbers(value: Any) -> bool:
        return isinstance(value, list | tuple) and bool(value) and all(is_number(v) for v in value)

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    kinds = {
        "arch": isinstance(config["arch"], str),
        "num_classes": whole(config["num_classes"]),
        "in_channels": whole(config["in_channels"]),
        "input_size": whole(config["input_size"]),
        "stem_stride": whole(config["stem_stride"]),
        "dropout": is_number(config["dropout"]),
        "stochastic_depth": is_number(config["stochastic_depth"]),
        "mean": numbers(config["mean"]),
        "std": numbers(config["std"]),
        "class_names": isinstance(config["class_names"], list | tuple)
        and all(isinstance(name, str) for name in config["class_names"]),
    }
    wrong = [name for name, ok in kinds.items() if not ok]
    if wrong:
        raise CheckpointError(f"{source}: model_config has malformed {', '.join(f'{n}={config[n]!r}' for n in wrong)}")


def is_number(value: object) -> bool:
    """An int or float, not a bool (JSON and YAML give bools where a number was meant)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_classifier(path: str | Path, expected_classes: tuple[str, ...] = EMOTIONS) -> LoadedClassifier:
    """Rebuild the model a checkpoint describes and check it speaks our label space."""
    checkpoint, sha256 = read_checkpoint_hashed(path)
    config = ModelConfig.from_dict(checkpoint["model_config"])
    if tuple(config.class_names) != tuple(expected_classes):
        raise CheckpointError(
            f"{path}: class order {list(config.class_names)} does not match expected {list(expected_classes)}"
        )
    if config.num_classes != len(config.class_names):
        raise CheckpointError(f"{path}: num_classes {config.num_classes} but {len(config.class_names)} class names")
    try:
        model = build_model(config)
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: weights do not fit {config.arch} ({err})") from err
    model.eval()
    return LoadedClassifier(model, config, dict(checkpoint["meta"]), Path(path), sha256)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
