"""Train both ensemble members side by side within one wall-clock budget, then fit their ensemble.

    python -m fer_core.train_pair --data ../shared/data/fer2013 --out runs/pair              # 540 s budget
    python -m fer_core.train_pair --data ... --out runs/pair --resume                       # an interrupted call
    python -m fer_core.train_pair --data ... --out runs/try --set lr=3e-3 --set B_mixcut.dropout=0.4

The issue asks for both models in at most 10 minutes on one GPU. Two `fer_core.train` processes share the GPU
(one run at batch 512 filled only half of an H200 in session 27), each with `--deadline` at the budget's end, so
data loading and CUDA start-up count against it and each schedule is fitted to the time that is left. Their logs
go to OUT/<member>.log and their runs to OUT/<member>/; then `fer_core.fit_ensemble` fits the weight and TTA set on
PublicTest into OUT/weights, and OUT/pair.json records the wall times and PublicTest scores. PrivateTest is never
read here. On a CPU the same command works (each member gets half the cores), but 10 minutes there train little.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

import fer_core
from fer_core import cli, fit_ensemble
from fer_core.checkpoint import read_checkpoint
from fer_core.cli import UserInputError
from fer_core.train import TrainConfig, typed_config_values

log = logging.getLogger("fer_core.train_pair")

#: Session 27's from-scratch GPU call: one OneCycle each, planned long and cut by the deadline (123 and 161 epochs
#: of ~3 s on an H200). A is regularised harder: CRP overfits (train accuracy 96 % by its end).
SHARED: dict[str, Any] = {
    "epochs": 400,
    "lr": 4e-3,
    "batch_size": 512,
    "stem_stride": 1,
    "channels_last": True,
    "cudnn_benchmark": False,  # autotuning cost ~50 s of a short run's first step
}
MEMBERS: dict[str, dict[str, Any]] = {
    "A_crp": {"recipe": "crp", "dropout": 0.5, "stochastic_depth": 0.3, "seed": 61},
    "B_mixcut": {"recipe": "mixcut", "dropout": 0.3, "stochastic_depth": 0.1, "seed": 62},
}
#: Fields the pair sets itself (from --data, --out and --time-budget, and each member's name).
OWN_FIELDS = ("data", "out", "name", "time_budget")
DEFAULT_BUDGET_S = 540.0  # 9 minutes: the last epoch may run a little past the deadline (train.BUDGET_SLACK)


@dataclass
class Member:
    """One training process of the pair and what became of it."""

    name: str
    config: TrainConfig
    log_path: Path
    process: subprocess.Popen | None = None
    wall_s: float | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """`--set KEY=VALUE` (both members) and `--set MEMBER.KEY=VALUE` (one), typed as a --config file's values."""
    known = {f.name for f in fields(TrainConfig)}
    overrides: dict[str, dict[str, Any]] = {name: {} for name in MEMBERS}
    shared: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        member, dot, field_name = key.rpartition(".")
        source = f"--set {item}"
        if not sep or not field_name:
            raise UserInputError(f"{source}: expected KEY=VALUE or MEMBER.KEY=VALUE")
        if dot and member not in MEMBERS:
            raise UserInputError(f"{source}: no member {member!r}; members: {', '.join(MEMBERS)}")
        field_name = field_name.replace("-", "_")
        if field_name not in known:
            raise UserInputError(f"{source}: {field_name!r} is not a training option (see python -m fer_core.train -h)")
        if field_name in OWN_FIELDS:
            raise UserInputError(f"{source}: {field_name} is set by the pair; use --data, --out or --time-budget")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UserInputError(f"{source}: cannot read the value ({error})") from None
        typed = typed_config_values({field_name: value}, Path(source))
        (overrides[member] if dot else shared).update(typed)
    return {name: {**shared, **own} for name, own in overrides.items()}


def member_configs(data: str, out: Path, budget_s: float, overrides: dict[str, dict[str, Any]]) -> list[Member]:
    """Both members' configs, checked (an out-of-range value stops here, before any process starts)."""
    members = []
    for name, recipe in MEMBERS.items():
        values = {**SHARED, **recipe, **overrides[name]}
        values.update(data=data, out=str(out / name), name=name, time_budget=budget_s)
        if "threads" not in overrides[name] and not uses_cuda(values.get("device", "auto")):
            values["threads"] = max(1, (os.cpu_count() or 2) // len(MEMBERS))  # side by side: half the cores each
        try:
            config = TrainConfig(**values)
        except (TypeError, ValueError) as error:
            raise UserInputError(f"{name}: {error}") from None
        members.append(Member(name, config, out / f"{name}.log"))
    return members


def uses_cuda(device: str) -> bool:
    return device != "cpu" and torch.cuda.is_available()


def launch(member: Member, deadline: float, resume: bool) -> None:
    """Start `python -m fer_core.train` for `member`, its config in OUT/<member>.json, its output in its log."""
    config_path = member.log_path.with_suffix(".json")
    cli.write_text_atomically(config_path, json.dumps(asdict(member.config), indent=1))
    command = [sys.executable, "-m", "fer_core.train", "--config", str(config_path), "--deadline", repr(deadline)]
    env = dict(os.environ)
    package_root = str(Path(fer_core.__file__).resolve().parents[1])  # this fer_core, from any working folder
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.setdefault("TQDM_MININTERVAL", "10")  # a log file, not a terminal: a progress line every 10 s, not 10 a second
    with member.log_path.open("w", encoding="utf-8") as log_file:
        member.process = subprocess.Popen(
            [*command, *(["--resume"] if resume else [])], stdout=log_file, stderr=subprocess.STDOUT, env=env
        )


def progress_line(members: list[Member], elapsed_s: float) -> str:
    """Each member's latest epoch and best PublicTest accuracy so far, from its history.csv."""
    parts = []
    for member in members:
        history_path = member.run_dir / "history.csv"
        state = "starting"
        if member.wall_s is not None:
            state = f"done (exit {member.process.returncode if member.process else '?'})"
        elif history_path.is_file():
            try:
                history = pd.read_csv(history_path)
                state = f"epoch {int(history['epoch'].iloc[-1])}, best PublicTest {history['val_acc'].max():.3f}"
            except (OSError, ValueError, KeyError, IndexError):
                state = "running"
        parts.append(f"{member.name} {state}")
    return f"[{elapsed_s:5.0f}s] " + " | ".join(parts)


def wait_for(members: list[Member], began: float, report_every_s: float) -> None:
    """Wait for both processes, logging progress; Ctrl-C stops both (they resume with --resume)."""
    next_report = began + report_every_s
    try:
        while any(member.wall_s is None for member in members):
            for member in members:
                if member.wall_s is None and member.process is not None and member.process.poll() is not None:
                    member.wall_s = time.time() - began
            now = time.time()
            if now >= next_report:
                log.info(progress_line(members, now - began))
                next_report = now + report_every_s
            time.sleep(0.2)
    except KeyboardInterrupt:
        for member in members:
            if member.process is not None and member.process.poll() is None:
                member.process.terminate()
        for member in members:
            if member.process is not None:
                member.process.wait()
        raise


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()[-lines:])


def member_summary(member: Member) -> dict[str, Any]:
    """The run's length as its deadline fitted it (last.pt: best.pt may predate the fit) and its best epoch."""
    meta = read_checkpoint(member.run_dir / "best.pt")["meta"]
    return {
        "checkpoint": str(member.run_dir / "best.pt"),
        "wall_s": round(member.wall_s or 0.0, 1),
        "epochs": read_checkpoint(member.run_dir / "last.pt")["meta"]["train_config"]["epochs"],
        "best_epoch": meta["epoch"],
        "public_test_accuracy": meta["metrics"]["val_acc"],
        "public_test_macro_f1": meta["metrics"]["val_macro_f1"],
        "device": meta.get("device"),
    }


def fit_pair(members: list[Member], data: str, weights: Path, runtime: str) -> dict[str, Any]:
    """`fer_core.fit_ensemble` on both best.pt files into `weights`; what it chose, for pair.json."""
    checkpoints = [str(member.run_dir / "best.pt") for member in members]
    fit_ensemble.main(["--data", data, "--models", *checkpoints, "--out", str(weights), "--runtime", runtime])
    spec = json.loads((weights / "ensemble.json").read_text())
    accuracy = spec["public_test"]["ensemble_accuracy"]
    log.info("ensemble in %s: PublicTest %.4f with tta %s", weights, accuracy, spec["tta"])
    return {
        "weights_folder": str(weights),
        "tta": spec["tta"],
        "weights": {m["name"]: m["weight"] for m in spec["models"]},
        "public_test_accuracy": accuracy,
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m fer_core.train_pair", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="FER-2013 CSV or Kaggle-style folder")
    parser.add_argument("--out", type=cli.out_folder, required=True, help="folder for both runs, logs and weights/")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        help=f"wall-clock seconds for both trainings, start-up included (default: {DEFAULT_BUDGET_S:.0f})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[MEMBER.]KEY=VALUE",
        help=f"a training option for both members, or one ({', '.join(MEMBERS)}); repeatable",
    )
    parser.add_argument("--resume", action="store_true", help="continue both runs from their last.pt")
    parser.add_argument("--no-fit", action="store_true", help="train only; do not fit the ensemble")
    parser.add_argument(
        "--runtime",
        choices=["auto", "torch", "onnxruntime"],
        default="auto",
        help="runtime of the ensemble fit (auto: torch on a GPU, onnxruntime on a CPU)",
    )
    parser.add_argument("--report-every", type=float, default=30.0, help="seconds between progress lines")
    args = parser.parse_args(argv)
    if not (args.time_budget > 0 and args.time_budget < float("inf")):
        parser.error(f"--time-budget {args.time_budget}: must be a positive number of seconds")

    members = member_configs(args.data, args.out, args.time_budget, parse_overrides(args.set))
    held = [str(m.run_dir) for m in members if any((m.run_dir / f).exists() for f in ("last.pt", "best.pt"))]
    if held and not args.resume:
        raise UserInputError(
            f"{', '.join(held)} already hold runs: add --resume to continue them, or choose another --out"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    deadline = began + args.time_budget
    for member in members:
        launch(member, deadline, args.resume)
    log.info(
        "training %s side by side until %s (logs: %s/*.log)", " and ".join(MEMBERS), time.ctime(deadline), args.out
    )
    wait_for(members, began, args.report_every)
    both_s = time.time() - began
    failed = [m for m in members if m.process is not None and m.process.returncode != 0]
    if failed:
        raise UserInputError(
            "; ".join(
                f"{m.name} failed (exit {m.process.returncode}), the end of {m.log_path}:\n{log_tail(m.log_path)}"
                for m in failed
            )
        )
    summary: dict[str, Any] = {
        "time_budget_s": args.time_budget,
        "wall_s": round(both_s, 1),
        "members": {m.name: member_summary(m) for m in members},
    }
    log.info(
        "both trained in %.0f s (budget %.0f s): %s",
        both_s,
        args.time_budget,
        "; ".join(
            f"{name} {s['epochs']} epochs in {s['wall_s']:.0f} s, best PublicTest {s['public_test_accuracy']:.4f} "
            f"at epoch {s['best_epoch']}"
            for name, s in summary["members"].items()
        ),
    )
    cli.write_text_atomically(args.out / "pair.json", json.dumps(summary, indent=1))  # kept if the fit fails
    if not args.no_fit:
        runtime = args.runtime
        if runtime == "auto":
            runtime = "torch" if uses_cuda(members[0].config.device) else "onnxruntime"
        summary["ensemble"] = fit_pair(members, args.data, args.out / "weights", runtime)
        cli.write_text_atomically(args.out / "pair.json", json.dumps(summary, indent=1))


if __name__ == "__main__":
    cli.run(main)
