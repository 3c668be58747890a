"""Train both ensemble members side by side within one wall-clock budget, then fit their ensemble.

    python -m fer_core.train_pair --data ../shared/data/fer2013 --out runs/pair              # 540 s budget
    python -m fer_core.train_pair --data ... --out runs/pair --resume                       # an interrupted call
    python -m fer_core.train_pair --data ... --out runs/try --set lr=3e-3 --set B_mixcut.dropout=0.4

The issue asks for both models in at most 10 minutes on one GPU. Two `fer_core.train` processes share the GPU
(one run at batch 512 filled only half of an H200 in session 27), each with `--deadline` at the budget's end, so
data loading and CUDA start-up count against it and each schedule is fitted to the time that is left. Their logs
go to OUT/<member>.log and their runs to OUT/<member>/; then `fer_core.fit_ensemble` fits the weight and TTA set on
PublicTest into OUT/weights, and OUT/pair.json records each call's wall time and the members' PublicTest scores.
PrivateTest is never read here.

A member's plan is fitted after its 2nd epoch and keeps one more to anneal, so each trains at least 3 epochs
whatever the budget: seconds on a GPU, but about 35 minutes a member on a 2-core CPU (each gets half the cores).
The members stop with the pair (Ctrl-C, a kill, a failed member) at their last finished epoch, and `--resume`
continues them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import fer_core
from fer_core import cli, fit_ensemble
from fer_core.checkpoint import read_checkpoint
from fer_core.cli import UserInputError
from fer_core.train import TrainConfig, cuda_wanted, field_type, typed_config_values

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
MAX_BUDGET_S = 30 * 24 * 3600.0
#: Seconds a member gets to finish the checkpoint it is writing once asked to stop, before it is killed.
STOP_GRACE_S = 60.0
LOCK_NAME = ".train_pair.lock"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class PairStopped(Exception):
    """SIGTERM or SIGHUP reached the pair: its members are stopped as for a Ctrl-C."""


@dataclass
class Member:
    """One training process of the pair and what became of it."""

    name: str
    config: TrainConfig
    log_path: Path
    process: subprocess.Popen | None = None
    stopped: bool = False  # by the pair (Ctrl-C, a kill, the other member failing), not by a failure of its own

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """`--set KEY=VALUE` (both members) and `--set MEMBER.KEY=VALUE` (one). Numbers and switches are read as YAML,
    as in a --config file; text (paths) is taken as typed: YAML made `init_from=#x.pt` empty and `0123` into 83."""
    kinds = {f.name: field_type(f) for f in fields(TrainConfig)}
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
        if field_name not in kinds:
            raise UserInputError(f"{source}: {field_name!r} is not a training option (see python -m fer_core.train -h)")
        if field_name in OWN_FIELDS:
            raise UserInputError(f"{source}: {field_name} is set by the pair; use --data, --out or --time-budget")
        try:
            value = text if kinds[field_name] is str else yaml.safe_load(text)
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
        if "threads" not in overrides[name] and not cuda_wanted(values.get("device", "auto")):
            values["threads"] = max(1, (os.cpu_count() or 2) // len(MEMBERS))  # side by side: half the cores each
        try:
            config = TrainConfig(**values)
        except (TypeError, ValueError) as error:
            raise UserInputError(f"{name}: {error}") from None
        members.append(Member(name, config, out / f"{name}.log"))
    return members


def stop_with_parent() -> None:
    """Runs in each member's process before `train` starts: on Linux it gets SIGINT (a Ctrl-C: it finishes the
    checkpoint it is writing) when the pair dies, however it dies. Killed members trained on alone, and the next
    --resume ran a second trainer in the same folder."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def launch(member: Member, deadline: float, resume: bool, reschedule: bool) -> None:
    """Start `python -m fer_core.train` for `member`, its config in OUT/<member>.json, its output appended to its
    log under a header for this call (a resume kept no trace of what went before)."""
    config_path = member.log_path.with_suffix(".json")
    cli.write_text_atomically(config_path, json.dumps(asdict(member.config), indent=1))
    command = [sys.executable, "-m", "fer_core.train", "--config", str(config_path), "--deadline", repr(deadline)]
    command += ["--resume"] * resume + ["--reschedule"] * reschedule
    env = dict(os.environ)
    package_root = str(Path(fer_core.__file__).resolve().parents[1])  # this fer_core, from any working folder
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.setdefault("TQDM_MININTERVAL", "10")  # a log file, not a terminal: a progress line every 10 s, not 10 a second
    with member.log_path.open("a", encoding="utf-8") as log_file:
        log_file.write(f"\n=== train_pair call at {time.ctime()}{' (--resume)' if resume else ''}\n")
        log_file.flush()
        member.process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the pair only, which asks each member once
            preexec_fn=stop_with_parent,  # safe: the pair runs no other threads
        )


def stop(members: list[Member], grace_s: float = STOP_GRACE_S) -> None:
    """Ask running members to stop as Ctrl-C does (the checkpoint being written is finished or left as it was),
    then kill what is still running after `grace_s`."""
    for member in members:
        if member.running:
            member.stopped = True
            member.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
    ends = time.time() + grace_s
    for member in members:
        if member.process is None:
            continue
        try:
            member.process.wait(timeout=max(0.0, ends - time.time()))
        except subprocess.TimeoutExpired:
            member.process.kill()
            member.process.wait()


@contextmanager
def stopping_members_on_exit(members: list[Member]) -> Iterator[None]:
    """SIGTERM and SIGHUP end the pair as Ctrl-C does; whatever ends it early, its members stop with it."""

    def stopped(signum: int, frame: Any) -> None:
        raise PairStopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except BaseException:
        stop(members)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """One pair call per --out at a time: two would train both members twice in the same folders."""
    import fcntl  # POSIX; the pair's process handling is too

    with (out / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(f"{out}: another train_pair call is training these members now") from None
        yield


def progress_line(members: list[Member], elapsed_s: float) -> str:
    """Each member's latest epoch and best PublicTest accuracy so far, from its history.csv."""
    parts = []
    for member in members:
        history_path = member.run_dir / "history.csv"
        state = "starting"
        if member.process is not None and member.process.poll() is not None:
            state = f"done (exit {member.process.returncode})"
        elif history_path.is_file():
            try:
                history = pd.read_csv(history_path)
                state = f"epoch {int(history['epoch'].iloc[-1])}, best PublicTest {history['val_acc'].max():.3f}"
            except (OSError, ValueError, KeyError, IndexError):
                state = "running"
        parts.append(f"{member.name} {state}")
    return f"[{elapsed_s:5.0f}s] " + " | ".join(parts)


def wait_for(members: list[Member], began: float, report_every_s: float) -> None:
    """Wait for both processes, logging progress. When one fails the other is stopped at once: the pair needs both,
    and a member whose resume was refused left the other training to the deadline before anyone was told."""
    next_report = began + report_every_s
    while any(member.running for member in members):
        failed = [m for m in members if m.process is not None and m.process.poll() not in (None, 0)]
        if failed and any(member.running for member in members):
            log.error("%s failed: stopping the other member at its last finished epoch", failed[0].name)
            stop(members)
        now = time.time()
        if now >= next_report:
            log.info(progress_line(members, now - began))
            next_report = now + report_every_s
        time.sleep(0.2)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()[-lines:])


def failure_report(failed: list[Member], out: Path) -> str:
    """Each failed member with the end of its log; one the pair stopped because of the other is only named."""
    reports = [
        f"{m.name} failed (exit {m.process.returncode if m.process else '?'}), the end of {m.log_path}:\n"
        f"{log_tail(m.log_path)}\n(to train {m.name} again from scratch, remove {out / m.name} and run with --resume)"
        for m in failed
        if not m.stopped
    ]
    reports += [f"{m.name} was stopped at its last finished epoch (--resume continues it)" for m in failed if m.stopped]
    return "; ".join(reports)


def member_summary(member: Member) -> dict[str, Any]:
    """The run as its checkpoints record it: the length its deadline fitted and the epochs done (last.pt; best.pt
    may predate the fit), the training seconds of every call, and the best epoch's PublicTest scores."""
    best = read_checkpoint(member.run_dir / "best.pt")["meta"]
    last = read_checkpoint(member.run_dir / "last.pt")["meta"]
    return {
        "checkpoint": str((member.run_dir / "best.pt").resolve()),
        "epochs_planned": last["train_config"]["epochs"],
        "epochs_done": last["epoch"],
        "train_s": round(last["train_seconds"], 1),
        "best_epoch": best["epoch"],
        "public_test_accuracy": best["metrics"]["val_acc"],
        "public_test_macro_f1": best["metrics"]["val_macro_f1"],
        "device": best.get("device"),
    }


def record_call(out: Path, call: dict[str, Any], members: list[Member], resume: bool) -> dict[str, Any]:
    """pair.json with this call added to the calls before it (a resume's few seconds replaced the first call's
    wall time, the figure the 10-minute target is about)."""
    path = out / "pair.json"
    calls: list[dict[str, Any]] = []
    if resume and path.is_file():
        try:
            calls = list(json.loads(path.read_text(encoding="utf-8")).get("calls", []))
        except (OSError, ValueError, AttributeError):
            log.warning("%s: unreadable, so the calls before this one are not counted", path)
    calls.append(call)
    summary = {
        "calls": calls,
        "wall_s_all_calls": round(sum(c["wall_s"] for c in calls), 1),
        "members": {m.name: member_summary(m) for m in members},
    }
    cli.write_text_atomically(path, json.dumps(summary, indent=1))
    return summary


def fit_pair(members: list[Member], data: str, weights: Path, runtime: str) -> dict[str, Any]:
    """`fer_core.fit_ensemble` on both best.pt files into `weights`; what it chose, for pair.json. The data is read
    as the members read it: with `--set skip_bad=true` they trained past bad rows, and the fit stopped at the first
    one after both trainings, with no weights/ written."""
    checkpoints = [str(member.run_dir / "best.pt") for member in members]
    argv = ["--data", data, "--models", *checkpoints, "--out", str(weights), "--runtime", runtime]
    if any(member.config.skip_bad for member in members):  # one without it stopped at a bad row, and failed the pair
        argv.append("--skip-bad")
    fit_ensemble.main(argv)
    spec = json.loads((weights / "ensemble.json").read_text())
    accuracy = spec["public_test"]["ensemble_accuracy"]
    log.info("ensemble in %s: PublicTest %.4f with tta %s", weights, accuracy, spec["tta"])
    return {
        "weights_folder": str(weights.resolve()),
        "tta": spec["tta"],
        "weights": {m["name"]: m["weight"] for m in spec["models"]},
        "public_test_accuracy": accuracy,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.argument_parser("train_pair", __doc__)
    parser.add_argument("--data", required=True, help="FER-2013 CSV or Kaggle-style folder")
    parser.add_argument(
        "--out",
        type=lambda text: cli.out_folder(os.path.expanduser(text)),  # as the members expand theirs
        required=True,
        help="folder for both runs, logs and weights/",
    )
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
    parser.add_argument(
        "--reschedule", action="store_true", help="with --resume: accept a changed --set epochs (see train -h)"
    )
    parser.add_argument("--no-fit", action="store_true", help="train only; do not fit the ensemble")
    parser.add_argument(
        "--runtime",
        choices=cli.RUNTIMES,
        default="auto",
        help="runtime of the ensemble fit (auto: torch on a GPU, onnxruntime on a CPU)",
    )
    parser.add_argument("--report-every", type=float, default=30.0, help="seconds between progress lines")
    args = parser.parse_args(argv)
    if not 0 < args.time_budget <= MAX_BUDGET_S:
        parser.error(f"--time-budget {args.time_budget}: must be a number of seconds in (0, {MAX_BUDGET_S:.0f}]")
    if args.reschedule and not args.resume:
        parser.error("--reschedule changes the schedule of runs being resumed: add --resume")
    args.data = os.path.expanduser(args.data)  # `--data=~/fer`: the members expanded it, fit_ensemble did not
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    members = member_configs(args.data, args.out, args.time_budget, parse_overrides(args.set))
    held = [str(m.run_dir) for m in members if any((m.run_dir / f).exists() for f in ("last.pt", "best.pt"))]
    if held and not args.resume:
        raise UserInputError(
            f"{', '.join(held)} already hold runs: add --resume to continue them, or choose another --out"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with locked(args.out):
        began = time.time()
        deadline = began + args.time_budget
        try:
            with stopping_members_on_exit(members):
                for member in members:
                    launch(member, deadline, args.resume, args.reschedule)
                log.info(
                    "training %s side by side until %s (logs: %s/*.log)",
                    " and ".join(MEMBERS),
                    time.ctime(deadline),
                    args.out,
                )
                wait_for(members, began, args.report_every)
        except (KeyboardInterrupt, PairStopped) as stopped:
            reason = f"stopped ({stopped})" if isinstance(stopped, PairStopped) else "interrupted"
            print(
                f"{reason}: both members stopped at their last finished epoch; continue with --resume", file=sys.stderr
            )
            raise SystemExit(130) from None
    call_s = time.time() - began
    failed = [m for m in members if m.process is not None and m.process.returncode != 0]
    if failed:
        raise UserInputError(failure_report(failed, args.out))
    started = datetime.fromtimestamp(began, UTC).isoformat(timespec="seconds")
    call = {"began": started, "wall_s": round(call_s, 1), "time_budget_s": args.time_budget, "resume": args.resume}
    summary = record_call(args.out, call, members, args.resume)
    log.info(
        "this call took %.0f s (budget %.0f s; %.0f s over %d call(s)): %s",
        call_s,
        args.time_budget,
        summary["wall_s_all_calls"],
        len(summary["calls"]),
        "; ".join(
            f"{name} {s['epochs_done']} of {s['epochs_planned']} epochs ({s['train_s']:.0f} s of epochs in all), "
            f"best PublicTest {s['public_test_accuracy']:.4f} at epoch {s['best_epoch']}"
            for name, s in summary["members"].items()
        ),
    )
    if not args.no_fit:
        runtime = args.runtime
        if runtime == "auto":
            runtime = "torch" if cuda_wanted(members[0].config.device) else "onnxruntime"
        summary["ensemble"] = fit_pair(members, args.data, args.out / "weights", runtime)
        cli.write_text_atomically(args.out / "pair.json", json.dumps(summary, indent=1))


if __name__ == "__main__":
    cli.run(main)
