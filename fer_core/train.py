"""Train one EfficientNet-B0 emotion classifier on FER-2013.

    python -m fer_core.train --data ../shared/data/fer2013 --recipe crp --out runs/A
    python -m fer_core.train --config recipe.yaml --resume          # continue runs/A/last.pt
    torchrun --nproc_per_node 2 -m fer_core.train ...               # DDP (nccl on GPU, gloo on CPU)

CUDA with bf16 autocast when available, CPU otherwise. Writes per-epoch `history.csv`,
`last.pt` (everything needed for an exact resume) and `best.pt` (best PublicTest accuracy).
Each epoch reseeds from (seed, epoch), so a resumed run repeats the uninterrupted one exactly.

`--schedule swa` (stochastic weight averaging, usually with `--init-from`): a short warm-up, then a constant LR,
and a running mean of the weights at the end of every epoch. The mean, with batch-norm statistics recomputed for
it, is what gets validated and saved as `best.pt`; `last.pt` holds both the live and the averaged weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import numbers
import os
import time
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from fer_core import cli
from fer_core.augment import RECIPES
from fer_core.checkpoint import (
    build_checkpoint,
    code_version,
    model_name_problem,
    read_checkpoint,
    save_checkpoint,
    unwrap,
)
from fer_core.cli import UserInputError
from fer_core.data import FerSplit, class_weights, load_fer2013
from fer_core.distill import SoftLabels, blend_targets
from fer_core.export import file_sha256
from fer_core.labels import TRAIN_SPLIT, VAL_SPLIT
from fer_core.metrics import summary_metrics
from fer_core.models import ModelConfig, build_model, normalise

log = logging.getLogger("fer_core.train")

SCHEDULES = ("onecycle", "swa")
#: TrainConfig fields that name files or folders (a leading ~ is the home folder, as a shell would have it).
PATH_FIELDS = ("data", "out", "init_from", "soft_labels")
DEVICES = ("auto", "cpu", "cuda")
#: The checkpoints a run writes in its --out (a folder that holds one holds a run), and with them every file it writes.
CHECKPOINT_NAMES = ("last.pt", "best.pt")
RUN_FILES = (*CHECKPOINT_NAMES, "history.csv")
BN_RECALIBRATION_IMAGES = 8192  # training images (no augmentation) that give averaged weights their BN statistics


@dataclass
class TrainConfig:
    """All knobs of a run; saved into every checkpoint so the model card can quote them."""

    data: str = ""
    out: str = "runs/model"
    name: str = ""  # the model's name in ensembles and the card; default: a parent's name, else OUT's folder
    recipe: str = "crp"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_pct: float = 0.1
    schedule: str = "onecycle"  # or "swa": warm-up, constant LR, weights averaged over epochs (see module doc)
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5
    stem_stride: int = 1
    dropout: float = 0.3
    stochastic_depth: float = 0.1
    seed: int = 0
    limit: int = 0
    val_limit: int = 0
    threads: int = 0
    device: str = "auto"
    channels_last: bool = True  # NHWC: 1.8x faster steps on this 2-core CPU (python -m fer_core.bench_train)
    cudnn_benchmark: bool = True  # CUDA: autotune convolutions; an H200 run spent ~50 s on its first step with it
    skip_bad: bool = False
    eval_batch_size: int = 512
    stop_after: int = 0  # end this invocation after N epochs (resume later): splits a schedule across sessions
    time_budget: float = 0.0  # seconds for this invocation's epochs: after the first, `epochs` shrinks to fit
    init_from: str = ""  # fine-tune: start from this classifier checkpoint's weights with a fresh optimizer/schedule
    soft_labels: str = ""  # distillation: teacher probabilities from `python -m fer_core.distill`
    distill_alpha: float = 0.5  # share of the teacher in each target: (1 - a) one-hot + a teacher

    def __post_init__(self) -> None:
        """Refuse unknown names and out-of-range numbers here, so a --config file or a notebook meets the same
        checks as the flags, before any data loads (not a ZeroDivisionError or a scheduler error epochs later)."""
        self._as_plain_types()
        for option, known in (("recipe", tuple(RECIPES)), ("schedule", SCHEDULES)):
            if getattr(self, option) not in known:
                raise ValueError(f"unknown {option} {getattr(self, option)!r}; known: {', '.join(known)}")
        if self.device not in DEVICES:  # "cuda:1" or "meta" passed here and failed in a traceback later
            raise ValueError(f"device {self.device!r}: use {', '.join(DEVICES)} (pick a GPU with CUDA_VISIBLE_DEVICES)")
        problems = [f"{name} {getattr(self, name)!r} {rule}" for name, rule, ok in self._ranges() if not ok]
        if problems:
            raise ValueError("; ".join(problems))

    def _as_plain_types(self) -> None:
        """A notebook builds this directly: numpy numbers (a grid from np.logspace) become Python ones, because the
        config is saved in every checkpoint and `torch.load(weights_only=True)` refuses numpy scalars, so a run
        would train for hours and leave files that neither load nor resume; a path becomes its text. A value of
        the wrong kind (`lr="3e-3"`, `epochs=2.5`, `seed=True`) is refused by name."""
        wrong = []
        for option in fields(self):
            kind, value = field_type(option), getattr(self, option.name)
            if kind is str and isinstance(value, os.PathLike | str):
                value = str(os.fspath(value))  # np.str_ (a grid from np.array) is a str of another type
                if option.name in PATH_FIELDS:  # `out: ~/runs/A` in a config made a folder named "~" here
                    value = os.path.expanduser(value)
            elif kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
                value = int(value)
            elif kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
                value = float(value)
            elif kind is bool and isinstance(value, np.bool_):
                value = bool(value)
            if type(value) is not kind:
                wrong.append(f"{option.name} {value!r}: expected {kind.__name__}")
            setattr(self, option.name, value)
        if wrong:
            raise TypeError("; ".join(wrong))

    def _ranges(self) -> list[tuple[str, str, bool]]:
        positive_finite = np.isfinite(self.lr) and self.lr > 0
        name_problem = model_name_problem(self.name) if self.name else None  # "" takes a parent's or OUT's name
        return [
            ("epochs", "must be at least 1", self.epochs >= 1),
            ("batch_size", "must be at least 1", self.batch_size >= 1),
            ("eval_batch_size", "must be at least 1", self.eval_batch_size >= 1),
            ("lr", "must be a positive number", bool(positive_finite)),
            (
                "weight_decay",
                "must be a finite number, at least 0",
                bool(np.isfinite(self.weight_decay)) and self.weight_decay >= 0,
            ),
            ("warmup_pct", "must lie in [0, 1)", 0 <= self.warmup_pct < 1),
            ("label_smoothing", "must lie in [0, 1)", 0 <= self.label_smoothing < 1),
            ("class_weight_power", "must lie in [0, 2]", 0 <= self.class_weight_power <= 2),  # inf gave NaN weights
            ("stem_stride", "must be at least 1", self.stem_stride >= 1),
            ("dropout", "must lie in [0, 1)", 0 <= self.dropout < 1),
            ("stochastic_depth", "must lie in [0, 1)", 0 <= self.stochastic_depth < 1),
            ("distill_alpha", "must lie in [0, 1]", 0 <= self.distill_alpha <= 1),
            ("seed", f"must lie in [0, {cli.SEED_MAX}]", 0 <= self.seed <= cli.SEED_MAX),  # see cli.SEED_MAX
            ("name", str(name_problem), name_problem is None),
            ("time_budget", "must be a finite number of seconds", bool(np.isfinite(self.time_budget))),
            *((name, "must be at least 0", getattr(self, name) >= 0) for name in _NON_NEGATIVE),
        ]


#: Counts and budgets where 0 means "off" (all data, all threads, no stop, no budget) and negatives mean nothing.
_NON_NEGATIVE = ("limit", "val_limit", "threads", "stop_after", "time_budget")


#: What a resumed run must share with the run it continues: everything that changes the network, the loss, the
#: optimiser or the data it sees. Threads, device, memory layout, batch size for evaluation and the per-invocation
#: `stop_after` / `time_budget` may change (the first three with a warning: `NOT_BIT_EXACT`); `epochs` may with
#: --reschedule. The run's name may not: ensembles key their members by it.
RESUME_MUST_MATCH = (
    "recipe",
    "schedule",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_pct",
    "label_smoothing",
    "class_weight_power",
    "stem_stride",
    "dropout",
    "stochastic_depth",
    "seed",
    "limit",
    "val_limit",
    "distill_alpha",
)  # soft_labels: not its path but its teacher and data are compared (`changed_sources`), so a moved file resumes


#: What a resumed run may change that still moves its numbers slightly (float sums in another order): said in a
#: warning, because it may have to change (another machine), but the resume is then no longer exact.
NOT_BIT_EXACT = ("channels_last", "threads", "device")


def typed_config_values(loaded: dict[str, Any], source: Path) -> dict[str, Any]:
    """--config values as their fields' types: YAML reads `3e-3` (no dot) as a string, which failed epochs later."""
    kinds = {option.name: field_type(option) for option in fields(TrainConfig)}
    typed = {}
    for key, value in loaded.items():
        try:
            typed[key] = as_field_type(kinds[key], value)
        except (TypeError, ValueError) as error:
            raise UserInputError(f"{source}: {key}: {value!r} is not a valid {kinds[key].__name__} ({error})") from None
    return typed


def field_type(option: Field) -> type:
    """A TrainConfig field's Python type (annotations are strings under `from __future__ import annotations`)."""
    return {"int": int, "float": float, "str": str, "bool": bool}[str(option.type)]


def as_field_type(kind: type, value: Any) -> Any:
    if isinstance(value, bool) and kind in (int, float):
        raise ValueError("expected a number, not true/false")  # float(True) would make `epochs: true` one epoch
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError("expected true or false")
    if kind is str:
        if isinstance(value, dict | list):
            raise ValueError("expected text")
        return "" if value is None else str(value)
    number = float(value)
    if kind is int:
        if not number.is_integer():
            raise ValueError("expected a whole number")
        return int(number)
    return number


def read_config_file(path: Path) -> dict[str, Any]:
    """A --config file's mapping of TrainConfig fields (.json as JSON, anything else as YAML; empty: no fields)."""
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_text()
        loaded = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:  # JSONDecodeError is a ValueError
        raise UserInputError(f"{path}: cannot read it as {kind} ({error})") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserInputError(f"{path}: expected field: value pairs (a mapping), found a {type(loaded).__name__}")
    return loaded


#: `--help` for each TrainConfig field (a flag, or a key of a --config file).
FLAG_HELP = {
    "data": "FER-2013 CSV (.csv, .gz, .xz, .zip) or Kaggle-style folder",
    "out": "run folder for history.csv, best.pt and last.pt",
    "name": "the model's name in ensemble.json and the card (default: a parent's name, else OUT's folder name)",
    "recipe": "augmentation: crp (random crop with padding, rotation, flip) or mixcut (MixUp + CutMix)",
    "epochs": "planned epochs of the LR schedule",
    "batch_size": "training images per step (per process under torchrun)",
    "lr": "peak learning rate of AdamW",
    "weight_decay": "AdamW weight decay",
    "warmup_pct": "share of the schedule spent warming up, in [0, 1)",
    "schedule": "onecycle, or swa (warm-up, constant LR, weights averaged over epochs)",
    "label_smoothing": "label smoothing of the cross-entropy, in [0, 1)",
    "class_weight_power": "loss weight per class = frequency^-power, in [0, 2] (0: unweighted; helps `disgust`)",
    "stem_stride": "stride of EfficientNet-B0's first convolution (1: 48 px faces keep a 3x3 final map)",
    "dropout": "dropout before the classifier, in [0, 1)",
    "stochastic_depth": "EfficientNet's stochastic depth probability, in [0, 1)",
    "seed": "seed of initialisation, shuffling and augmentation",
    "limit": "train on a random subset of N Training images, drawn with --seed (0: all; for quick trials)",
    "val_limit": "validate on a random subset of N PublicTest images, drawn with --seed (0: all)",
    "threads": "PyTorch CPU threads (0: PyTorch's default)",
    "device": "auto (CUDA when present), cpu or cuda; pick a GPU with CUDA_VISIBLE_DEVICES",
    "channels_last": "NHWC memory layout (1.8x faster steps on a 2-core CPU)",
    "cudnn_benchmark": "let cuDNN autotune convolutions (slow first step on short GPU runs)",
    "skip_bad": "skip (and count) malformed rows or unreadable images instead of stopping",
    "eval_batch_size": "images per validation batch",
    "stop_after": "end this invocation after N epochs; continue later with --resume (0: run to the end)",
    "time_budget": (
        "seconds for this invocation: after the 2nd epoch (again if epochs slow down), --epochs shrinks to end in time"
    ),
    "init_from": "fine-tune: start from this classifier checkpoint's weights with a fresh optimiser and schedule",
    "soft_labels": "distillation: teacher probabilities from python -m fer_core.distill (.npz)",
    "distill_alpha": "share of the teacher in each target: (1 - a) one-hot + a teacher, in [0, 1]",
}


def shown_default(option: Field) -> str:
    """What --help says of a TrainConfig field's default: the dataclass's (the flag's own is None, so a --config
    value is not overridden); nothing where FLAG_HELP says it in words, "required" for --data (its "" meant none
    was given), "none" for an empty path (no parent weights, no soft labels), and "on"/"off" for a --x/--no-x
    switch (its "False" read as a value to type)."""
    if option.name == "data":
        return " (required, here or in --config)"
    if "(default:" in FLAG_HELP[option.name]:
        return ""
    if isinstance(option.default, bool):
        return f" (default: {'on' if option.default else 'off'})"
    return f" (default: {option.default if option.default != '' else 'none'})"


class Invocation(NamedTuple):
    """What one `python -m fer_core.train` call asks for: the run's config and how this call treats it."""

    config: TrainConfig
    resume: bool = False
    reschedule: bool = False
    overwrite: bool = False
    deadline: float | None = None  # wall-clock time (time.time()) by which this call's epochs must end


def parse_args(argv: list[str] | None = None) -> Invocation:
    parser = cli.argument_parser("train", __doc__)
    parser.add_argument("--config", type=Path, help="YAML/JSON file of TrainConfig fields; flags override it")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    parser.add_argument(
        "--reschedule",
        action="store_true",
        help="with --resume: accept a changed --epochs by stretching/shrinking the LR schedule (not an exact resume)",
    )
    parser.add_argument("--overwrite", action="store_true", help="start again in an --out that holds a run")
    parser.add_argument(
        "--deadline",
        type=float,
        help="fit the plan to end this call's epochs by this wall-clock time (seconds since 1970, as `date +%%s` "
        "prints; like --time-budget, at least 3 epochs): unlike --time-budget it counts the start-up (data loading, "
        "CUDA) too; with both, the earlier end wins (fer_core.train_pair gives both members one)",
    )
    choices: dict[str, dict[str, Any]] = {"recipe": {"choices": sorted(RECIPES)}, "schedule": {"choices": SCHEDULES}}
    for option in fields(TrainConfig):
        flag = "--" + option.name.replace("_", "-")
        kind = field_type(option)
        shown = f"{FLAG_HELP[option.name]}{shown_default(option)}"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=shown)
        else:
            extra = choices.get(option.name, {})
            parser.add_argument(flag, type=kind, default=None, help=shown, **extra)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        loaded = read_config_file(args.config)
        unknown = set(loaded) - {f.name for f in fields(TrainConfig)}
        if unknown:
            parser.error(f"{args.config}: unknown keys {sorted(unknown)}")
        values.update(typed_config_values(loaded, args.config))
    values.update({f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None})
    try:
        config = TrainConfig(**values)
    except ValueError as error:
        raise UserInputError(f"{args.config or 'flags'}: {error}") from error
    if not config.data:
        parser.error("--data (or `data:` in --config) is required")
    if args.reschedule and not args.resume:
        parser.error("--reschedule changes the schedule of a run being resumed: add --resume")
    if args.overwrite and args.resume:
        parser.error("--overwrite starts the run again and --resume continues it: choose one")
    if args.deadline is not None and not np.isfinite(args.deadline):
        parser.error(f"--deadline {args.deadline}: must be a finite time")
    return Invocation(config, args.resume, args.reschedule, args.overwrite, args.deadline)


@dataclass
class Distributed:
    """Where this process sits in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def cuda_wanted(requested: str) -> bool:
    """Whether a run asking for device `requested` (auto, cpu or cuda) trains on CUDA: auto takes it when present."""
    return torch.cuda.is_available() and requested in ("auto", "cuda")


def setup_distributed(requested: str) -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA device is available here (use auto or cpu)")
    use_cuda = cuda_wanted(requested)
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        return Distributed(dist.get_rank(), world_size, device)
    device = (
        torch.device("cuda") if use_cuda else torch.device(requested if requested not in ("auto", "cuda") else "cpu")
    )
    return Distributed(0, 1, device)


def subset_indices(count: int, limit: int = 0, seed: int = 0) -> np.ndarray:
    """Which samples a run uses: all of them, or with `limit` a seeded random subset (smoke runs)."""
    if limit and limit < count:
        return np.sort(np.random.default_rng(seed).permutation(count)[:limit])
    return np.arange(count)


def to_tensors(split: FerSplit, limit: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 48, 48) uint8 and (N,) labels of the samples `subset_indices` picks."""
    keep = subset_indices(len(split), limit, seed)
    return torch.from_numpy(split.images[keep]).unsqueeze(1).contiguous(), torch.from_numpy(split.labels[keep])


def load_teacher_probs(cfg: TrainConfig, split: FerSplit, fingerprint: str) -> tuple[torch.Tensor, dict]:
    """The soft labels of the samples this run trains on, checked against the training data, and their teacher."""
    try:
        soft = SoftLabels.load(cfg.soft_labels)
        soft.check(fingerprint, len(split), cfg.soft_labels)
    except ValueError as error:
        raise UserInputError(str(error)) from error
    return torch.from_numpy(soft.probs[subset_indices(len(split), cfg.limit, cfg.seed)]), soft.teacher


@torch.no_grad()
def predict_probs(
    model: nn.Module, images_uint8: torch.Tensor, config: ModelConfig, device: torch.device, batch_size: int = 512
) -> np.ndarray:
    """Softmax probabilities for (N, 1, H, W) uint8 images, in batches, eval mode."""
    model.eval()
    outputs = []
    for start in range(0, len(images_uint8), batch_size):
        batch = normalise(images_uint8[start : start + batch_size].to(device), config)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(batch)
        outputs.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, config.num_classes), np.float32)


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epoch: int,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: nn.Module,
    dist_info: Distributed,
    teacher_probs: torch.Tensor | None = None,
) -> dict[str, float]:
    recipe = RECIPES[cfg.recipe]
    device = dist_info.device
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    order = torch.randperm(len(labels), generator=generator)  # one shuffle shared by every rank, then sharded
    per_rank = len(order) // dist_info.world_size
    order = order[dist_info.rank * per_rank : (dist_info.rank + 1) * per_rank]
    if dist_info.rank:  # the draws after the shuffle (augmentation, dropout, MixUp/CutMix) must differ by rank
        torch.manual_seed(epoch_seed(cfg.seed, epoch, dist_info.rank))
        generator.manual_seed(epoch_seed(cfg.seed, epoch, dist_info.rank))
    steps = max(1, len(order) // cfg.batch_size)
    model.train()
    total_loss: torch.Tensor | float = 0.0
    seen, preds, targets = 0, [], []
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not dist_info.is_main, leave=False)
    order = order.to(images.device)
    for step in bar:
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x = images[idx].to(device, non_blocking=True).float().div_(255.0)
        y = labels[idx].to(device, non_blocking=True)
        x = recipe.augment(x, generator)
        x = (x - model_cfg.mean[0]) / model_cfg.std[0]
        target = y if teacher_probs is None else blend_targets(y, teacher_probs[idx].to(device), cfg.distill_alpha)
        if recipe.mix is not None:
            x, target = recipe.mix(x, target)  # blended soft targets are mixed like the images
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
            loss = criterion(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        total_loss = total_loss + loss.detach() * len(y)  # a device tensor: no host sync per step
        seen += len(y)
        preds.append(logits.detach().argmax(1))
        targets.append(y)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{float(total_loss) / seen:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    all_preds, all_targets = torch.cat(preds), torch.cat(targets)
    totals = torch.tensor([float(total_loss), float(seen)], dtype=torch.float64, device=all_preds.device)
    if dist_info.world_size > 1:  # every rank's shard, not rank 0's alone (the shards are equal in size)
        dist.all_reduce(totals)
        all_preds, all_targets = gather_from_ranks(all_preds, dist_info), gather_from_ranks(all_targets, dist_info)
    scores = summary_metrics(all_targets.cpu().numpy(), all_preds.cpu().numpy())
    mean_loss = float(totals[0] / totals[1].clamp(min=1))
    return {"train_loss": mean_loss, "train_acc": scores["accuracy"], "train_macro_f1": scores["macro_f1"]}


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's random draws: rank 0 keeps the single-process stream, so runs resume exactly."""
    base = seed * 100_003 + epoch
    return base if rank == 0 else base * 1_009 + rank


def gather_from_ranks(values: torch.Tensor, dist_info: Distributed) -> torch.Tensor:
    parts = [torch.empty_like(values) for _ in range(dist_info.world_size)]
    dist.all_gather(parts, values)
    return torch.cat(parts)


def validate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    probs = predict_probs(unwrap(model), images, model_cfg, device, cfg.eval_batch_size)
    y = labels.numpy()
    scores = summary_metrics(y, probs.argmax(1))
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    return {"val_loss": nll, "val_acc": scores["accuracy"], "val_macro_f1": scores["macro_f1"]}


def one_cycle(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle with `warmup_pct` of the steps rising; a warm-up of exactly one step (OneCycleLR divides by zero
    there: 42 images, batch 8, 2 epochs) becomes two, or none in a run of two steps."""
    total = epochs * steps_per_epoch
    warmup = cfg.warmup_pct
    if float(warmup * total) == 1.0:
        warmup = 2 / total if total > 2 else 0.0
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=warmup)


def swa_warmup_steps(cfg: TrainConfig, epochs: int, steps_per_epoch: int) -> int:
    """SWA's linear warm-up: `warmup_pct` of the run's steps, at least one."""
    return max(1, int(cfg.warmup_pct * epochs * steps_per_epoch))


def lr_schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycle, or for SWA a linear warm-up (from lr/10, over `warmup_pct` of the run) to a constant LR."""
    if cfg.schedule == "swa":
        warmup = swa_warmup_steps(cfg, epochs, steps_per_epoch)
        return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
    return one_cycle(optimizer, cfg, epochs, steps_per_epoch)


def retarget_schedule(
    scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: TrainConfig, epochs: int, steps_per_epoch: int
) -> None:
    """Keep the step count, follow a new length: the LR continues from where it is on the new curve.

    OneCycle's new curve comes from a probe scheduler on a throwaway optimizer, so the real one is untouched.
    SWA's warm-up shrinks with the run: sized for the planned length, a plan cut by `--time-budget` was all warm-up,
    so the averaged weights never saw the constant LR. LinearLR steps by ratios of its curve, so the LR is put on
    the new curve here and the next steps follow it.
    """
    if isinstance(scheduler, torch.optim.lr_scheduler.LinearLR):
        warmup, step = swa_warmup_steps(cfg, epochs, steps_per_epoch), scheduler.last_epoch
        scheduler.total_iters = warmup
        share = min(step, warmup) / warmup
        factor = scheduler.start_factor + (scheduler.end_factor - scheduler.start_factor) * share
        for group in scheduler.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
        return
    if not isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        return
    probe = one_cycle(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr), cfg, epochs, steps_per_epoch)
    scheduler.total_steps, scheduler._schedule_phases = probe.total_steps, probe._schedule_phases


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, images_uint8: torch.Tensor, config: ModelConfig, device: torch.device, batch_size: int
) -> None:
    """Give averaged weights batch-norm statistics of their own: the mean of two networks' statistics is not the
    statistics of the mean network.

    Unlike `torch.optim.swa_utils.update_bn`, only the batch-norm layers are in training mode: stochastic depth
    and dropout stay off, so the statistics are those of the network inference runs.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative mean over all batches
        module.train()
    for start in range(0, len(images_uint8), batch_size):
        model(normalise(images_uint8[start : start + batch_size].to(device), config))
    for module, momentum in zip(norms, momenta, strict=True):
        module.momentum = momentum
    model.eval()


def invocation_end(cfg: TrainConfig, start_epoch: int) -> int:
    """The epoch count at which this invocation stops: the plan's end, or earlier with `--stop-after`."""
    return min(cfg.epochs, start_epoch + cfg.stop_after) if cfg.stop_after else cfg.epochs


def epochs_within_budget(planned: int, done: int, budget_s: float, elapsed_s: float, epoch_s: float) -> int:
    """Total epochs that fit a time budget, given the epochs done so far and the duration of one epoch.

    Only ever shrinks the plan (a schedule that moves back and forth would jolt the LR), and keeps at least one
    epoch beyond those done so the LR can still anneal.
    """
    affordable = done + int(max(0.0, budget_s - elapsed_s) // max(epoch_s, 1e-9))
    return max(done + 1, min(planned, affordable)) if done < planned else planned


#: After the first fit, a budgeted plan is cut again only when its projected end overruns the budget by this share,
#: so timing noise does not move the LR curve every epoch.
BUDGET_SLACK = 0.05


def invocation_budget(time_budget: float, deadline: float | None, now: float) -> float:
    """Seconds this call's epochs may take from `now`: `--time-budget`, or less when `--deadline` comes first.

    0 means no budget, so a deadline already past gives the smallest positive budget instead (the plan is then cut
    to one epoch beyond the second, the least that still anneals).
    """
    if deadline is None:
        return time_budget
    left = max(deadline - now, 1e-3)
    return min(time_budget, left) if time_budget else left


def budget_decision(
    cfg: TrainConfig,
    budget_s: float,
    done: int,
    elapsed_s: float,
    epoch_times: list[float],
    stop_at: int,
    dist_info: Distributed,
) -> int:
    """The epoch count that fits `budget_s` (see `invocation_budget`), rank 0's for every rank.

    The 2nd epoch of this invocation fits the plan. It can time an epoch faster than the rest: runs started side by
    side on one GPU (session 27) share it only once each is past its start-up, and a run fitted to 161 epochs that
    way overran a 470 s budget by 43 s. So later epochs check again with the median of the last three and cut the
    plan once more when it would end more than `BUDGET_SLACK` late (never lengthen it: the LR would jolt back).
    The plan is cut only if this invocation's epochs (up to `stop_at`: `--stop-after` may end it early) overrun.
    """
    first = len(epoch_times) == 2
    epoch_s = 1.05 * epoch_times[-1] if first else float(np.median(epoch_times[-3:]))
    allowed = budget_s * (1.0 if first else 1.0 + BUDGET_SLACK)
    fitted = cfg.epochs
    if elapsed_s + (stop_at - done) * epoch_s > allowed:
        fitted = epochs_within_budget(cfg.epochs, done, budget_s, elapsed_s, epoch_s)
    if dist_info.world_size > 1:  # every rank must follow rank 0's decision
        decision = torch.tensor([fitted], device=dist_info.device)
        dist.broadcast(decision, src=0)
        fitted = int(decision.item())
    return fitted


def load_initial_weights(model: nn.Module, requested: ModelConfig, path: str | Path) -> dict[str, Any]:
    """Fine-tuning: put a shipped/earlier checkpoint's weights into `model`, built from this run's config.

    Dropout and stochastic depth may change (they only act in training); anything that changes the weights'
    shapes or the input contract may not. Returns the parent's lineage (name, recipe, epochs, device, time,
    sha256) for the new checkpoint's metadata, so the model card can tell the whole history.
    """
    checkpoint = read_checkpoint(path)
    source = ModelConfig.from_dict(checkpoint["model_config"])
    fixed = ("arch", "input_size", "in_channels", "stem_stride", "num_classes", "class_names", "mean", "std")
    differ = [
        f"{k} differs ({getattr(source, k)} there, {getattr(requested, k)} in this run)"
        for k in fixed
        if getattr(source, k) != getattr(requested, k)
    ]
    if differ:  # with both values: the user can then set e.g. --stem-stride to the parent's
        raise UserInputError(f"{path}: cannot fine-tune from it: {'; '.join(differ)}")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:  # missing or reshaped tensors: not a checkpoint of this network
        raise UserInputError(f"{path}: its weights do not fit this network ({str(error).splitlines()[0]})") from error
    log.info("fine-tuning from %s", path)
    meta = checkpoint["meta"]
    lineage = {key: meta[key] for key in ("name", "recipe", "epoch", "device", "train_seconds") if key in meta}
    return {**lineage, "file": Path(path).name, "sha256": file_sha256(path), "parent": meta.get("fine_tuned_from")}


def starting_weights(
    model: nn.Module, requested: ModelConfig, init_from: str, resumed_from: Path | None
) -> dict[str, Any] | None:
    """`load_initial_weights`, except for a resumed fine-tune whose parent file is gone: last.pt replaces those
    weights anyway and records the parent's lineage, so the run goes on (it could not be resumed at all)."""
    if not init_from:
        return None
    if resumed_from is not None and resumed_from.is_file() and not Path(init_from).exists():
        recorded = read_checkpoint(resumed_from)["meta"].get("fine_tuned_from")
        if recorded is not None:
            log.warning(
                "%s is gone: resuming with the parent %s recorded in %s", init_from, recorded["file"], resumed_from
            )
            return recorded
    return load_initial_weights(model, requested, init_from)


def changed_sources(saved_meta: dict[str, Any], parent: dict[str, Any] | None, teacher: dict | None) -> list[str]:
    """What a resumed run would silently swap: the weights it started from, or the teacher behind its soft labels.

    The paths can stay the same while the files change (a new release in `weights/`, a recomputed teacher), so
    the checkpoint's recorded sha256s are compared, not the paths.
    """
    saved_parent = (saved_meta.get("fine_tuned_from") or {}).get("sha256")
    saved_teacher = {k: v for k, v in (saved_meta.get("distilled_from") or {}).items() if k != "alpha"}
    changed = []
    if saved_parent != (parent or {}).get("sha256"):
        changed.append("the --init-from weights")
    if saved_teacher != (teacher or {}):  # members, weights and TTA: any of them makes other soft labels
        changed.append("the teacher of --soft-labels")
    return changed


def check_run_folder(out: Path, init_from: str, *, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work, an --out that cannot be written, one that holds the --init-from weights (the run
    would overwrite what it starts from), and one that holds a run without --resume or --overwrite (a forgotten
    --resume wiped hours of training)."""
    try:
        cli.out_folder(str(out))  # a file, a path under a file, a folder we may not write in
    except argparse.ArgumentTypeError as err:
        raise UserInputError(f"--out {err}") from err
    if init_from and Path(init_from).resolve() in {(out / name).resolve() for name in CHECKPOINT_NAMES}:
        raise UserInputError(
            f"--init-from {init_from} lies in --out {out}: this run would overwrite the weights it starts from "
            "(and could never be resumed); copy them elsewhere or choose another --out"
        )
    if not (resume or overwrite) and any((out / name).is_file() for name in CHECKPOINT_NAMES):
        raise UserInputError(
            f"--out {out} already holds a run: add --resume to continue it, --overwrite to start it again from "
            "scratch, or choose another --out"
        )


def fitted_length(training: dict[str, Any], epochs: int) -> tuple[int, int, str | None]:
    """(the schedule's epochs, the epochs planned, a mismatch or None) for resuming a saved run without --reschedule.

    A budgeted run already fitted its length: it keeps it, but a new --epochs is a change, not a no-op (runs saved
    before `planned_epochs` was recorded accept any). Known by the plan, not only by the budget: a resume without
    --time-budget saves none, and the same command was refused the next time."""
    saved_epochs = training["config"]["epochs"]
    planned = training.get("planned_epochs")
    if not (training["config"].get("time_budget") or planned not in (None, saved_epochs)):
        return epochs, epochs, None
    mismatch = None
    if planned is not None and epochs not in (planned, saved_epochs):
        mismatch = f"epochs ({planned} planned then, {epochs} now; add --reschedule)"
    return saved_epochs, planned or epochs, mismatch


def changed_settings(
    state: dict[str, Any],
    cfg: TrainConfig,
    fingerprint: str,
    world_size: int,
    sources: tuple[dict[str, Any] | None, dict | None],
    *,
    reschedule: bool,
) -> list[str]:
    """What differs between a saved run and this call in ways that would change its result: the settings that must
    match (the length too, unless rescheduled), the training data, the number of processes, the weights it started
    from and the teacher (`sources`, see `changed_sources`), the name."""
    saved = state["training"]["config"]
    keys = RESUME_MUST_MATCH + (() if reschedule else ("epochs",))
    defaults = asdict(TrainConfig())  # runs saved before a knob existed used its default
    changed: list[str] = [k for k in keys if saved.get(k, defaults[k]) != getattr(cfg, k)]
    if state["meta"]["data_fingerprint"] != fingerprint:
        changed.append("training data")
    saved_world = state["meta"].get("world_size", 1)
    if saved_world != world_size:  # per-rank batches: the steps per epoch the schedule counts differ
        changed.append(f"the number of processes ({saved_world} then, {world_size} now)")
    changed += changed_sources(state["meta"], *sources)
    saved_name = state["meta"].get("name")
    if cfg.name and saved_name and cfg.name != saved_name:  # ensembles key members by it
        changed.append(f"the name ({saved_name} then, {cfg.name} now)")
    return changed


def run(
    cfg: TrainConfig,
    resume: bool = False,
    reschedule: bool = False,
    overwrite: bool = False,
    deadline: float | None = None,
) -> Path:
    """Train (or resume) a run; returns the path of `best.pt`. A folder that already holds a run is continued with
    `resume`, started again with `overwrite`, and otherwise refused: a forgotten --resume wiped hours of training.
    `deadline` (a `time.time()`) shortens the plan like `cfg.time_budget`, counting from now instead of the loop."""
    out = Path(cfg.out)
    check_run_folder(out, cfg.init_from, resume=resume, overwrite=overwrite)
    dist_info = setup_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # The carved validation split (sources without PublicTest) is part of the data, not of the run: seed 0 as in
    # fit_ensemble, evaluate and distill, so every tool selects and fits on the same faces whatever --seed is.
    dataset = load_fer2013(cfg.data, skip_bad=cfg.skip_bad)
    train_x, train_y = to_tensors(dataset[TRAIN_SPLIT], cfg.limit, cfg.seed)
    val_x, val_y = to_tensors(dataset[VAL_SPLIT], cfg.val_limit, cfg.seed)
    fingerprint = dataset.fingerprint()
    teacher_probs, teacher = (
        load_teacher_probs(cfg, dataset[TRAIN_SPLIT], fingerprint) if cfg.soft_labels else (None, None)
    )
    # Before the first epoch, not at its end: a folder mkdir cannot make (/sys lets root past os.access) was a traceback
    # there, history.csv as a folder an error; last.pt or best.pt as one read as a run, or nothing to resume. After the
    # inputs are read: a run refused for them leaves no folder.
    cli.prepare_out_folder(out, RUN_FILES)
    if dist_info.device.type == "cuda":  # 28.7k x 48 x 48 bytes: indexing on the GPU avoids a copy per step
        train_x, train_y = train_x.to(dist_info.device), train_y.to(dist_info.device)
        teacher_probs = None if teacher_probs is None else teacher_probs.to(dist_info.device)
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark

    model_cfg = ModelConfig(stem_stride=cfg.stem_stride, dropout=cfg.dropout, stochastic_depth=cfg.stochastic_depth)
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(dist_info.device)
    parent = starting_weights(model, model_cfg, cfg.init_from, out / "last.pt" if resume else None)
    name = cfg.name or (parent or {}).get("name") or out.name  # a later stage stays the same model
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weight = torch.from_numpy(class_weights(train_y.cpu().numpy(), cfg.class_weight_power)).to(dist_info.device)
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    steps_per_epoch = max(1, (len(train_y) // dist_info.world_size) // cfg.batch_size)
    scheduler = lr_schedule(optimizer, cfg, cfg.epochs, steps_per_epoch)
    averaged, bn_images = None, train_x[:0]
    if cfg.schedule == "swa":
        averaged = AveragedModel(model)
        bn_images = train_x[torch.from_numpy(subset_indices(len(train_y), BN_RECALIBRATION_IMAGES, cfg.seed))]
    history: list[dict[str, float]] = []
    start_epoch, best_acc, train_seconds = 0, -1.0, 0.0
    planned_epochs = cfg.epochs  # as asked: a time budget may shorten cfg.epochs after the 2nd epoch
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and not last_path.exists() and dist_info.is_main:
        log.warning("%s: nothing to resume, starting a new run", last_path)  # a mistyped --out says so
    if resume and last_path.exists():
        state = read_checkpoint(last_path)
        if "training" not in state:
            raise UserInputError(f"{last_path}: holds no training state (a best.pt or a shipped model?); cannot resume")
        training = state["training"]
        changed = []
        if not reschedule:
            cfg.epochs, planned_epochs, length_change = fitted_length(training, cfg.epochs)
            changed += [length_change] if length_change else []
        changed += changed_settings(
            state, cfg, fingerprint, dist_info.world_size, (parent, teacher), reschedule=reschedule
        )
        name = state["meta"].get("name") or name
        if changed:
            raise UserInputError(f"{last_path}: cannot resume exactly, {', '.join(changed)} differ from this run")
        model_cfg = ModelConfig.from_dict(state["model_config"])
        unwrap(model).load_state_dict(state["state_dict"])
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        if averaged is not None:
            averaged.load_state_dict(training["averaged"])
        if reschedule and training["config"]["epochs"] != cfg.epochs:
            if cfg.epochs <= training["epoch"] + 1:
                raise UserInputError(
                    f"{last_path}: --epochs {cfg.epochs} would end the run before epoch {training['epoch'] + 2}, "
                    f"and {training['epoch'] + 1} epochs are done already"
                )
            retarget_schedule(scheduler, cfg, cfg.epochs, steps_per_epoch)
            log.warning(
                "rescheduled from %d to %d epochs (not an exact resume)", training["config"]["epochs"], cfg.epochs
            )
        history = list(training["history"])
        start_epoch, best_acc, train_seconds = training["epoch"] + 1, training["best_acc"], training["train_seconds"]
        if dist_info.is_main and start_epoch >= cfg.epochs:  # it said "resumed ... at epoch 31 of 30"
            log.info(
                "%s: all %d epochs are done already, nothing to train (best validation accuracy %.4f)",
                last_path,
                cfg.epochs,
                best_acc,
            )
        elif dist_info.is_main:
            log.info(
                "resumed %s at epoch %d of %d (best validation accuracy so far %.4f, %.0f s of training done)",
                last_path,
                start_epoch + 1,
                cfg.epochs,
                best_acc,
                train_seconds,
            )
            defaults = asdict(TrainConfig())  # runs saved before a knob existed used its default
            inexact = [k for k in NOT_BIT_EXACT if training["config"].get(k, defaults[k]) != getattr(cfg, k)]
            if inexact:
                log.warning(
                    "%s changed since the run began: it goes on, but not bit for bit as it would have (sums "
                    "in another order)",
                    ", ".join(
                        f"{k} ({training['config'].get(k, defaults[k])} then, {getattr(cfg, k)} now)" for k in inexact
                    ),
                )
    if dist_info.world_size > 1:
        model = DistributedDataParallel(
            model, device_ids=[dist_info.device.index] if dist_info.device.type == "cuda" else None
        )

    meta_base = {
        "name": name,
        "recipe": RECIPES[cfg.recipe].description,
        "data_fingerprint": fingerprint,
        "data_counts": {split: len(dataset[split]) for split in dataset.splits},
        "code_version": code_version(),
        "device": str(torch.cuda.get_device_name(0) if dist_info.device.type == "cuda" else "cpu"),
        "world_size": dist_info.world_size,
        **({"distilled_from": {**teacher, "alpha": cfg.distill_alpha}} if teacher else {}),
        **({"fine_tuned_from": parent} if parent else {}),
    }
    budget_s = invocation_budget(cfg.time_budget, deadline, time.time())
    loop_began = last_decision = time.perf_counter()
    epoch_times: list[float] = []  # this invocation's, decision to decision (checkpoint writing included)
    epoch = start_epoch
    while epoch < invocation_end(cfg, start_epoch):
        began = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch + 1, "lr": float(scheduler.get_last_lr()[0])}
        row.update(
            train_one_epoch(
                model,
                train_x,
                train_y,
                epoch=epoch,
                cfg=cfg,
                model_cfg=model_cfg,
                optimizer=optimizer,
                scheduler=scheduler,
                criterion=criterion,
                dist_info=dist_info,
                teacher_probs=teacher_probs,
            )
        )
        if averaged is not None:
            averaged.update_parameters(unwrap(model))
        if dist_info.is_main:
            if averaged is not None:
                recalibrate_batchnorm(averaged.module, bn_images, model_cfg, dist_info.device, cfg.eval_batch_size)
                live = validate(model, val_x, val_y, model_cfg, cfg, dist_info.device)
                row.update({f"live_{key}": value for key, value in live.items()})
            saved = model if averaged is None else averaged.module  # what best.pt holds and history scores
            row.update(validate(saved, val_x, val_y, model_cfg, cfg, dist_info.device))
            row["epoch_seconds"] = time.perf_counter() - began
            train_seconds += row["epoch_seconds"]
            history.append(row)
        # Decided before the checkpoints are written, so a last.pt saved now already holds the fitted plan.
        now = time.perf_counter()
        epoch_times.append(now - last_decision)
        last_decision = now
        if budget_s and epoch - start_epoch >= 1:  # not on the 1st epoch: it carries the start-up
            end = invocation_end(cfg, start_epoch)
            fitted = budget_decision(cfg, budget_s, epoch + 1, now - loop_began, epoch_times, end, dist_info)
            if fitted != cfg.epochs:
                if dist_info.is_main:
                    log.warning("time budget %.0fs: %d epochs instead of %d", budget_s, fitted, cfg.epochs)
                cfg.epochs = fitted
                retarget_schedule(scheduler, cfg, fitted, steps_per_epoch)
        stop_if_diverged(row, epoch, dist_info)
        if dist_info.is_main:
            cli.write_text_atomically(out / "history.csv", pd.DataFrame(history).to_csv(index=False))
            metrics = {"val_acc": row["val_acc"], "val_macro_f1": row["val_macro_f1"], "epoch": epoch + 1}
            meta = {
                **meta_base,
                "train_config": asdict(cfg),  # current: a time budget may have shortened `epochs`
                "epoch": epoch + 1,
                "train_seconds": train_seconds,
                "metrics": metrics,
            }
            if row["val_acc"] > best_acc:
                best_acc = row["val_acc"]
                save_checkpoint(best_path, build_checkpoint(saved, model_cfg, meta))
            training = {
                "config": asdict(cfg),
                "planned_epochs": planned_epochs,
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "best_acc": best_acc,
                "train_seconds": train_seconds,
                **({"averaged": averaged.state_dict()} if averaged is not None else {}),
            }
            save_checkpoint(last_path, build_checkpoint(model, model_cfg, meta, training))
            log.info(
                "epoch %d/%d loss %.4f acc %.4f | val acc %.4f f1 %.4f | %.0fs",
                epoch + 1,
                cfg.epochs,
                row["train_loss"],
                row["train_acc"],
                row["val_acc"],
                row["val_macro_f1"],
                row["epoch_seconds"],
            )
        if dist_info.world_size > 1:
            dist.barrier()
        epoch += 1
    if dist_info.world_size > 1:
        dist.destroy_process_group()
    return best_path


def stop_if_diverged(row: dict[str, float], epoch: int, dist_info: Distributed) -> None:
    """Refuse to save an epoch whose losses are not finite: NaN weights were saved as best.pt (their NaN
    probabilities argmax to class 0, a finite accuracy that beats the -1 start). The validation loss catches a
    last step that broke the weights after the training loss was counted; rank 0 decides for every rank."""
    diverged = dist_info.is_main and not (np.isfinite(row["train_loss"]) and np.isfinite(row.get("val_loss", 0.0)))
    if dist_info.world_size > 1:
        decision = torch.tensor([float(diverged)], device=dist_info.device)
        dist.broadcast(decision, src=0)
        diverged = bool(decision.item())
    if diverged:
        kept = "last.pt and best.pt hold the last finite one" if epoch > 0 else "nothing was saved"
        raise UserInputError(
            f"epoch {epoch + 1}: the training loss is {row['train_loss']} and the validation loss "
            f"{row.get('val_loss', float('nan'))}, so the run diverged; this epoch was not saved ({kept}). "
            "Try a lower --lr"
        )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run(*parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
