"""Training CLI on a few dozen generated images: outputs, exact resume, recipes, DDP on gloo."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fer_core import train
from fer_core.checkpoint import load_classifier, read_checkpoint, save_checkpoint
from fer_core.cli import UserInputError
from fer_core.data import load_fer2013
from fer_core.export import file_sha256
from fer_core.models import ModelConfig, build_model
from fer_core.train import (
    TrainConfig,
    epoch_seed,
    epochs_within_budget,
    invocation_budget,
    parse_args,
    recalibrate_batchnorm,
)
from fer_core.train import main as train_main
from tests.conftest import REPO, make_classifier_checkpoint
from tests.fer_fixtures import write_fer_folder


def parameter_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The learned tensors of a state dict: batch-norm running statistics and counters left out."""
    return [k for k in state if "running" not in k and "num_batches" not in k]


TINY = ["--epochs", "2", "--batch-size", "16", "--stem-stride", "2", "--threads", "1", "--lr", "3e-3"]


def test_one_run_writes_history_and_checkpoints(tmp_path, tiny_csv):
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--name", "tiny", *TINY])
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    for column in ("train_loss", "train_acc", "train_macro_f1", "val_loss", "val_acc", "val_macro_f1", "lr"):
        assert history[column].notna().all()
    best = load_classifier(out / "best.pt")
    assert best.name == "tiny"
    assert best.meta["data_fingerprint"] and best.meta["train_config"]["recipe"] == "crp"
    assert best.meta["metrics"]["val_acc"] == pytest.approx(history["val_acc"].max())
    assert read_checkpoint(out / "last.pt")["training"]["epoch"] == 1


def test_best_pt_keeps_the_epoch_with_the_best_validation_accuracy(tmp_path, tiny_csv, monkeypatch):
    """Scripted validation (0.5, then 0.3): best.pt must stay at epoch 1 while last.pt moves on to epoch 2."""
    scores = iter([0.5, 0.3])
    monkeypatch.setattr(
        train, "validate", lambda *a, **k: {"val_loss": 1.0, "val_acc": (acc := next(scores)), "val_macro_f1": acc}
    )
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), *TINY])
    best, last = read_checkpoint(out / "best.pt"), read_checkpoint(out / "last.pt")
    assert best["meta"]["epoch"] == 1 and best["meta"]["metrics"]["val_acc"] == 0.5
    assert last["meta"]["epoch"] == 2
    assert any(not torch.equal(t, last["state_dict"][k]) for k, t in best["state_dict"].items())


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, tiny_csv, caplog):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_main(["--data", str(tiny_csv), "--out", str(straight), *TINY])
    train_main(["--data", str(tiny_csv), "--out", str(split), "--stop-after", "1", *TINY])
    first = pd.read_csv(split / "history.csv")
    assert len(first) == 1
    with caplog.at_level(logging.INFO, logger="fer_core.train"):
        train_main(["--data", str(tiny_csv), "--out", str(split), "--resume", *TINY])
    # where the run stands, in figures: it said only "resumed .../last.pt at epoch 2"
    assert f"at epoch 2 of 2 (best validation accuracy so far {first['val_acc'].max():.4f}, " in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fer_core.train"):
        train_main(["--data", str(tiny_csv), "--out", str(split), "--resume", *TINY])  # a finished run
    assert "all 2 epochs are done already, nothing to train" in caplog.text and "epoch 3 of 2" not in caplog.text
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(split / "last.pt")
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    pd.testing.assert_frame_equal(
        pd.read_csv(straight / "history.csv").drop(columns="epoch_seconds"),
        pd.read_csv(split / "history.csv").drop(columns="epoch_seconds"),
    )


def test_memory_layout_changes_speed_not_the_result():
    """NHWC is the training default because it is faster on CPU (fer_core.bench_train): same loss, same gradients."""
    torch.manual_seed(0)
    nchw = build_model(ModelConfig(stem_stride=2)).train()
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    images, labels = torch.randn(16, 1, 48, 48), torch.randint(0, 7, (16,))
    losses = []
    for model, batch in ((nchw, images), (nhwc, images.contiguous(memory_format=torch.channels_last))):
        torch.manual_seed(1)  # the same dropout and stochastic-depth masks in both
        loss = nn.functional.cross_entropy(model(batch), labels)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for (key, a), b in zip(nchw.named_parameters(), nhwc.parameters(), strict=True):
        assert a.grad is not None  # every parameter took part in the loss
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4 * float(a.grad.abs().max()), msg=key)
    assert TrainConfig().channels_last


def test_cudnn_autotuning_can_be_switched_off_for_short_gpu_runs():
    assert TrainConfig().cudnn_benchmark
    assert not parse_args(["--data", "d", "--no-cudnn-benchmark"])[0].cudnn_benchmark


def test_resume_refuses_a_changed_schedule(tmp_path, tiny_csv):
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--stop-after", "1", *TINY])
    changed = [a if a != "2" else "3" for a in TINY]
    with pytest.raises(UserInputError, match="epochs differ"):
        train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", *changed])


def test_resume_refuses_when_the_init_from_file_changed(tmp_path, tiny_csv):
    first, parent, tuned = tmp_path / "first", tmp_path / "parent.pt", tmp_path / "tuned"
    train_main(["--data", str(tiny_csv), "--out", str(first), "--stop-after", "1", *TINY])
    parent.write_bytes((first / "best.pt").read_bytes())
    tune = ["--data", str(tiny_csv), "--out", str(tuned), "--init-from", str(parent), *TINY]
    train_main([*tune, "--stop-after", "1"])
    parent.write_bytes((first / "last.pt").read_bytes())  # same path, other file: e.g. a new release in weights/
    with pytest.raises(UserInputError, match="the --init-from weights differ"):
        train_main([*tune, "--resume"])


def test_a_fine_tune_resumes_after_its_parent_file_is_gone(tmp_path, tiny_csv, caplog):
    """On resume the parent's weights are replaced by last.pt's and only its hash is compared: a deleted parent
    made the run impossible to resume (no such checkpoint file)."""
    first, parent, tuned = tmp_path / "first", tmp_path / "parent.pt", tmp_path / "tuned"
    train_main(["--data", str(tiny_csv), "--out", str(first), "--stop-after", "1", *TINY])
    parent.write_bytes((first / "best.pt").read_bytes())
    tune = ["--data", str(tiny_csv), "--out", str(tuned), "--init-from", str(parent), *TINY]
    train_main([*tune, "--stop-after", "1"])
    parent.unlink()
    with caplog.at_level(logging.WARNING, logger="fer_core.train"):
        train_main([*tune, "--resume"])
    assert "parent.pt is gone: resuming with the parent parent.pt" in caplog.text
    assert list(pd.read_csv(tuned / "history.csv")["epoch"]) == [1, 2]
    assert read_checkpoint(tuned / "best.pt")["meta"]["fine_tuned_from"]["file"] == "parent.pt"


def test_resume_keeps_the_run_s_name_and_says_when_it_is_not_bit_exact(tmp_path, tiny_csv, caplog):
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--name", "tiny", "--stop-after", "1", *TINY])
    with pytest.raises(UserInputError, match=r"the name \(tiny then, other now\) differ"):  # ensembles key by it
        train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", "--name", "other", *TINY])
    with caplog.at_level(logging.WARNING, logger="fer_core.train"):
        train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", "--no-channels-last", *TINY])
    assert read_checkpoint(out / "last.pt")["meta"]["name"] == "tiny"  # not the folder's name, without --name
    assert "channels_last (True then, False now) changed since the run began: it goes on, but not bit" in caplog.text


def test_mixcut_recipe_and_yaml_config(tmp_path, tiny_csv):
    config = tmp_path / "b.yaml"
    config.write_text(f"data: {tiny_csv}\nrecipe: mixcut\nepochs: 1\nbatch_size: 16\nstem_stride: 2\nthreads: 1\n")
    train_main(["--config", str(config), "--out", str(tmp_path / "b")])
    assert load_classifier(tmp_path / "b" / "best.pt").meta["train_config"]["recipe"] == "mixcut"


def test_ddp_with_two_gloo_processes(tmp_path, tiny_csv):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "fer_core.train",
        "--data",
        str(tiny_csv),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--stem-stride",
        "2",
        "--threads",
        "1",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_classifier(out / "best.pt").meta["world_size"] == 2
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2
    # Training metrics cover both shards (48 faces), not rank 0's 24: an odd count of right answers proves it.
    assert any(round(acc * 48) % 2 for acc in history["train_acc"]), list(history["train_acc"] * 48)


def test_reschedule_changes_the_length_of_a_resumed_run(tmp_path, tiny_csv, capsys):
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--stop-after", "1", *TINY])
    longer = ["--epochs", "3", *TINY[2:]]
    train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", "--reschedule", *longer])
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [1, 2, 3]
    assert read_checkpoint(out / "last.pt")["training"]["config"]["epochs"] == 3
    shorter = ["--epochs", "2", *TINY[2:]]  # three epochs are done: nothing would run, and it said "resumed"
    with pytest.raises(UserInputError, match="--epochs 2 would end the run before epoch 4, and 3 epochs are done"):
        train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", "--reschedule", *shorter])
    with pytest.raises(SystemExit, match="2"):  # argparse: --reschedule alone did nothing, unsaid
        parse_args(["--data", str(tiny_csv), "--reschedule"])
    assert "--reschedule changes the schedule of a run being resumed: add --resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("planned", "done", "budget", "elapsed", "epoch_s", "expected"),
    [
        (100, 2, 100.0, 20.0, 10.0, 10),  # 80 s left: 8 more epochs
        (5, 2, 1000.0, 20.0, 10.0, 5),  # never more than planned
        (100, 2, 10.0, 20.0, 10.0, 3),  # over budget already: one more epoch to finish the schedule
        (3, 3, 10.0, 20.0, 10.0, 3),  # nothing left to plan
    ],
)
def test_epochs_within_budget(planned, done, budget, elapsed, epoch_s, expected):
    assert epochs_within_budget(planned, done, budget, elapsed, epoch_s) == expected


def test_time_budget_shortens_the_run_and_anneals(tmp_path, tiny_csv):
    out = tmp_path / "run"
    many = ["--epochs", "50", *TINY[2:]]
    train_main(["--data", str(tiny_csv), "--out", str(out), "--time-budget", "0.001", *many])
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]  # decided after epoch 2: one more epoch, then stop
    state = read_checkpoint(out / "last.pt")["training"]
    assert state["config"]["epochs"] == 3
    assert read_checkpoint(out / "last.pt")["meta"]["train_config"]["epochs"] == 3
    assert state["scheduler"]["last_epoch"] == state["scheduler"]["total_steps"]  # the LR curve ran to its end


@pytest.mark.parametrize(
    ("time_budget", "deadline", "now", "expected"),
    [
        (0.0, None, 100.0, 0.0),  # neither: no budget
        (30.0, None, 100.0, 30.0),
        (0.0, 160.0, 100.0, 60.0),  # a deadline alone: what is left of it
        (30.0, 160.0, 100.0, 30.0),  # both: the earlier end
        (90.0, 160.0, 100.0, 60.0),
        (0.0, 90.0, 100.0, 1e-3),  # already past: the least budget, not 0 ("none")
    ],
)
def test_invocation_budget(time_budget, deadline, now, expected):
    assert invocation_budget(time_budget, deadline, now) == expected


def test_the_deadline_flag():
    assert parse_args(["--data", "d", "--deadline", "1790000000.5"]).deadline == 1790000000.5
    assert parse_args(["--data", "d"]).deadline is None
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--deadline", "nan"])


def fake_clock(monkeypatch: pytest.MonkeyPatch, epoch_s: Callable[[int], float], save_s: float = 0.0) -> dict:
    """Replace the training loop's clock: epoch N (0-based) takes `epoch_s(N)` seconds and writing last.pt
    `save_s`, so time-budget decisions can be tested without slow or flaky real timings."""
    clock = {"now": 0.0}
    now = staticmethod(lambda: clock["now"])
    monkeypatch.setattr(train, "time", type("FakeTime", (), {"perf_counter": now, "time": now}))
    real_epoch, real_save = train.train_one_epoch, train.save_checkpoint

    def timed_epoch(*args, epoch, **kwargs):
        clock["now"] += epoch_s(epoch)
        return real_epoch(*args, epoch=epoch, **kwargs)

    def timed_save(path, checkpoint):
        clock["now"] += save_s if Path(path).name == "last.pt" else 0.0
        return real_save(path, checkpoint)

    monkeypatch.setattr(train, "train_one_epoch", timed_epoch)
    monkeypatch.setattr(train, "save_checkpoint", timed_save)
    return clock


def test_a_budget_fitted_on_a_fast_second_epoch_is_cut_again_when_epochs_slow_down(tmp_path, tiny_csv, monkeypatch):
    """Session 27: two runs started side by side on one GPU; one timed its 2nd epoch while the other was still
    starting up, fitted 161 epochs and overran its 470 s budget by 43 s. Here epochs 1-2 take 1 s and the rest
    4 s, with a 20 s budget: the first fit plans 19 epochs (70 s); later epochs cut the plan."""
    clock = fake_clock(monkeypatch, lambda epoch: 1.0 if epoch < 2 else 4.0)
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--time-budget", "20", *TINY, "--epochs", "50"])
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 6  # fitted to 19 after epoch 2, cut to 17 after epoch 3 and to 6 after epoch 4
    assert clock["now"] <= 20.0
    state = read_checkpoint(out / "last.pt")["training"]
    assert state["config"]["epochs"] == 6
    assert state["scheduler"]["last_epoch"] == state["scheduler"]["total_steps"]  # the LR curve still ran to its end


def test_the_time_budget_counts_checkpoint_writing(tmp_path, tiny_csv, monkeypatch):
    """Epochs were timed before last.pt was written: with 1 s epochs and 1 s writes a 20 s budget planned 18
    epochs (36 s)."""
    clock = fake_clock(monkeypatch, lambda epoch: 1.0, save_s=1.0)
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--time-budget", "20", *TINY, "--epochs", "50"])
    assert len(pd.read_csv(out / "history.csv")) == 10  # 2 + (20 - 3) // 2.1
    assert clock["now"] <= 21.0  # the last write ends one second past the budget's 20 s of epochs and writes


def test_stop_after_within_the_budget_keeps_the_plan(tmp_path, tiny_csv, monkeypatch):
    """--stop-after 5 with 1 s epochs uses 5 s of a 30 s budget, yet the plan of 50 was cut to 28 as if every
    epoch had to fit this invocation."""
    fake_clock(monkeypatch, lambda epoch: 1.0)
    out = tmp_path / "run"
    budgeted = ["--time-budget", "30", *TINY, "--epochs", "50"]
    train_main(["--data", str(tiny_csv), "--out", str(out), "--stop-after", "5", *budgeted])
    assert read_checkpoint(out / "last.pt")["training"]["config"]["epochs"] == 50
    train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", "--stop-after", "40", *budgeted])
    fitted = read_checkpoint(out / "last.pt")["training"]["config"]["epochs"]
    assert fitted == 33  # 40 more epochs do not fit 30 s: fitted at this invocation's 2nd epoch to 7 + 26


def test_a_fitted_plan_stays_fitted_after_a_resume_without_a_budget(tmp_path, tiny_csv):
    """The resume without --time-budget saved none, so the same resume command was refused the next time
    ("epochs differ")."""
    out = tmp_path / "run"
    run = ["--data", str(tiny_csv), "--out", str(out), *TINY, "--epochs", "50"]
    train_main([*run, "--time-budget", "0.001", "--stop-after", "2"])  # fitted to 3 epochs
    train_main([*run, "--resume", "--stop-after", "0"])
    train_main([*run, "--resume"])  # the same command again: nothing left to do, and no refusal
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [1, 2, 3]


def test_a_budget_cut_swa_run_reaches_its_constant_lr(tmp_path, tiny_csv):
    """SWA's warm-up kept the planned length's size: a run cut from 50 epochs to 3 was all warm-up, so the
    averaged weights never saw the constant LR."""
    out = tmp_path / "run"
    swa = ["--schedule", "swa", "--time-budget", "0.001", *TINY, "--epochs", "50"]
    train_main(["--data", str(tiny_csv), "--out", str(out), *swa])
    state = read_checkpoint(out / "last.pt")["training"]
    assert state["config"]["epochs"] == 3
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-3)  # TINY's --lr
    lrs = pd.read_csv(out / "history.csv")["lr"].tolist()
    assert lrs[-1] == pytest.approx(3e-3) and lrs[0] < lrs[-1]


def test_a_budgeted_run_split_after_its_second_epoch_resumes_exactly(tmp_path, tiny_csv):
    """The budget decision comes before the epoch-2 checkpoint, so last.pt already holds the fitted plan."""
    budgeted = ["--time-budget", "0.001", "--epochs", "50", *TINY[2:]]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_main(["--data", str(tiny_csv), "--out", str(straight), *budgeted])
    train_main(["--data", str(tiny_csv), "--out", str(split), "--stop-after", "2", *budgeted])
    assert read_checkpoint(split / "last.pt")["training"]["config"]["epochs"] == 3
    train_main(["--data", str(tiny_csv), "--out", str(split), "--resume", *budgeted])
    pd.testing.assert_frame_equal(
        pd.read_csv(straight / "history.csv").drop(columns="epoch_seconds"),
        pd.read_csv(split / "history.csv").drop(columns="epoch_seconds"),
    )


def test_a_budgeted_run_refuses_a_new_epoch_count_on_resume(tmp_path, tiny_csv):
    """A budgeted run keeps the length it fitted, so a changed --epochs was silently ignored."""
    budgeted = ["--time-budget", "0.001", "--epochs", "50", *TINY[2:]]
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--stop-after", "2", *budgeted])
    with pytest.raises(UserInputError, match=r"epochs \(50 planned then, 5 now; add --reschedule\) differ"):
        train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", *budgeted, "--epochs", "5"])
    train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", *budgeted, "--epochs", "3"])  # the fitted
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [1, 2, 3]


def test_a_diverged_run_stops_without_saving_the_nan_epoch(tmp_path, tiny_csv, monkeypatch):
    """A NaN loss gave NaN weights that were saved as best.pt (a NaN score beat the -1 start) and a run that
    "succeeded"."""
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--stop-after", "1", *TINY])
    saved = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt")}
    real_epoch = train.train_one_epoch

    def diverged(*args, **kwargs):
        return {**real_epoch(*args, **kwargs), "train_loss": float("nan")}

    monkeypatch.setattr(train, "train_one_epoch", diverged)
    with pytest.raises(UserInputError, match=r"epoch 2: the training loss is nan .* diverged; .*\(last\.pt and best"):
        train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", *TINY])
    assert {name: (out / name).read_bytes() for name in saved} == saved
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)
    real_validate = train.validate
    monkeypatch.setattr(train, "validate", lambda *a, **k: {**real_validate(*a, **k), "val_loss": float("nan")})
    with pytest.raises(UserInputError, match=r"epoch 1: .* validation loss nan, .*\(nothing was saved\)"):
        train_main(["--data", str(tiny_csv), "--out", str(tmp_path / "fresh"), *TINY])
    assert not (tmp_path / "fresh" / "best.pt").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--stem-stride", "1"), ("--dropout", "0.5"), ("--weight-decay", "0.1"), ("--val-limit", "5")]
)
def test_resume_refuses_any_change_to_the_network_loss_or_optimiser(tmp_path, tiny_csv, flag, value):
    out = tmp_path / "run"
    train_main(["--data", str(tiny_csv), "--out", str(out), "--stop-after", "1", *TINY])
    changed = [*TINY, flag, value]  # the later flag wins
    with pytest.raises(UserInputError, match=f"{flag[2:].replace('-', '_')} differ"):
        train_main(["--data", str(tiny_csv), "--out", str(out), "--resume", *changed])


def test_config_file_values_take_their_fields_types(tmp_path, tiny_csv):
    config = tmp_path / "a.yaml"
    config.write_text(f"data: {tiny_csv}\nlr: 3e-3\nepochs: 1\nbatch_size: 16\nstem_stride: 2\nthreads: 1\n")
    train_main(["--config", str(config), "--out", str(tmp_path / "a")])  # YAML reads 3e-3 as the string '3e-3'
    assert load_classifier(tmp_path / "a" / "best.pt").meta["train_config"]["lr"] == 0.003
    config.write_text(f"data: {tiny_csv}\nepochs: 2.5\n")
    with pytest.raises(UserInputError, match=r"a\.yaml: epochs: 2\.5 is not a valid int \(expected a whole number\)"):
        train_main(["--config", str(config), "--out", str(tmp_path / "b")])


def test_a_notebook_config_with_numpy_numbers_leaves_checkpoints_that_load(tmp_path, tiny_csv):
    """A grid from np.logspace gives numpy scalars: saved in the checkpoint's config, they made every file refused
    by torch.load(weights_only=True), so the run could neither be loaded nor resumed."""
    cfg = TrainConfig(
        data=tiny_csv, out=tmp_path / "n", lr=np.logspace(-3, -2, 3)[1], epochs=np.int64(1), batch_size=16,  # type: ignore[arg-type]
        stem_stride=2, threads=1, channels_last=np.bool_(False),  # type: ignore[arg-type]
    )  # fmt: skip
    assert [type(v) for v in (cfg.data, cfg.lr, cfg.epochs, cfg.channels_last)] == [str, float, int, bool]
    assert type(TrainConfig(recipe=np.array(["crp", "mixcut"])[0]).recipe) is str  # np.str_ from a grid
    train.run(cfg)
    assert load_classifier(tmp_path / "n" / "best.pt").meta["train_config"]["lr"] == pytest.approx(10**-2.5)
    with pytest.raises(
        TypeError, match=r"epochs 2\.5: expected int; lr '3e-3': expected float; seed True: expected int"
    ):
        TrainConfig(lr="3e-3", epochs=2.5, seed=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--epochs", "0"], "epochs 0 must be at least 1"),
        (["--batch-size", "0"], "batch_size 0 must be at least 1"),
        (["--lr", "nan"], "lr nan must be a positive number"),
        (["--warmup-pct", "2"], r"warmup_pct 2\.0 must lie in \[0, 1\)"),
        (["--label-smoothing", "1.5"], "label_smoothing 1.5 must lie"),
        (["--stem-stride", "0"], "stem_stride 0 must be at least 1"),
        (["--limit", "-5"], "limit -5 must be at least 0"),
        (["--seed", "-1"], r"seed -1 must lie in \[0, 4294967295\]"),  # numpy refused it after the data had loaded
        (["--seed", "99999999999999999999999"], "seed 99999999999999999999999 must lie in"),  # torch's overflow
        (["--time-budget", "inf"], "time_budget inf must be a finite number"),  # a NaN epoch count after epoch 2
        (["--device", "gpu"], "device 'gpu': use auto, cpu, cuda"),  # torch's RuntimeError, as a traceback
        (["--device", "cuda:0"], "device 'cuda:0': use auto, cpu, cuda"),  # a traceback without a GPU
        (["--device", "meta"], "device 'meta': use auto, cpu, cuda"),  # autocast's RuntimeError
        (["--class-weight-power", "inf"], r"class_weight_power inf must lie in \[0, 2\]"),  # NaN class weights
        (["--name", "runs/A"], "name 'runs/A' cannot name a model file"),  # fit_ensemble failed hours later
        (["--name", ".A"], "name '.A' cannot name a model file"),  # a hidden .A.pt in the weights folder
    ],
)
def test_out_of_range_settings_are_refused_before_any_data_loads(flags, problem):
    with pytest.raises(UserInputError, match=rf"flags: .*{problem}"):
        parse_args(["--data", "nowhere", *flags])


def test_every_setting_is_explained_by_help(capsys):
    """--help listed the flags without a word on what --time-budget or --stop-after do."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert set(train.FLAG_HELP) == {option.name for option in dataclasses.fields(TrainConfig)}
    for explanation in train.FLAG_HELP.values():
        assert " ".join(explanation.split()) in text
    assert "after the 2nd epoch (again if epochs slow down), --epochs shrinks to end in time (default: 0.0)" in text
    assert "Kaggle-style folder (required, here or in --config)" in text  # not "(default: '')"
    assert "(default: a parent's name, else OUT's folder name) --recipe" in text  # one default, not a second ''
    assert (
        "--init-from INIT_FROM fine-tune: start from this classifier checkpoint's weights with a fresh optimiser "
        "and schedule (default: none)" in text
    )
    assert "(default: '')" not in text


def test_limit_help_says_the_subset_is_random_as_it_is(capsys):
    """--help said "the first N images" while `subset_indices` draws a seeded random subset."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "first N" not in text
    assert "train on a random subset of N Training images, drawn with --seed" in text
    assert "validate on a random subset of N PublicTest images, drawn with --seed" in text
    picked = train.subset_indices(100, 10, seed=0)
    assert list(picked) != list(range(10)) and list(picked) == list(train.subset_indices(100, 10, seed=0))


def test_init_from_names_both_values_of_what_differs(tmp_path):
    """The message said "stem_stride differ from this run" without saying which stride either side has."""
    parent = make_classifier_checkpoint(tmp_path / "parent.pt", "parent", seed=0)  # stem stride 2
    requested = ModelConfig(stem_stride=1)
    with pytest.raises(
        UserInputError, match=r"parent\.pt: cannot fine-tune from it: stem_stride differs \(2 there, 1 in "
    ):
        train.load_initial_weights(build_model(requested), requested, parent)


def test_unreadable_config_files_are_one_clear_error(tmp_path):
    config = tmp_path / "c.yaml"
    for text, problem in (
        ("epochs: [1\n", "cannot read it as YAML"),
        ("- epochs: 1\n", "expected field: value pairs .* found a list"),
        ("epochs: true\n", "epochs: True is not a valid int .*not true/false"),
    ):
        config.write_text(text)
        with pytest.raises(UserInputError, match=rf"c\.yaml: {problem}"):
            parse_args(["--config", str(config), "--data", "d"])
    config.write_text("")  # no fields at all: the flags alone
    assert parse_args(["--config", str(config), "--data", "d"])[0].epochs == TrainConfig().epochs
    broken = tmp_path / "c.json"
    broken.write_text("{epochs: 1")
    with pytest.raises(UserInputError, match=r"c\.json: cannot read it as JSON"):
        parse_args(["--config", str(broken), "--data", "d"])


def test_runs_that_cannot_go_right_are_refused_up_front(tmp_path, tiny_csv):
    base = ["--data", str(tiny_csv), *TINY]
    out = tmp_path / "run"
    train_main([*base, "--out", str(out), "--stop-after", "1"])
    with pytest.raises(UserInputError, match="this run would overwrite the weights it starts from"):
        train_main([*base, "--out", str(out), "--init-from", str(out / "best.pt")])
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(UserInputError, match="exists and is not a folder"):
        train_main([*base, "--out", str(a_file)])
    with pytest.raises(UserInputError, match=f"{a_file} is a file, not a folder"):  # found after an epoch, before
        train_main([*base, "--out", str(a_file / "run")])
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copyfile(out / "best.pt", copied / "last.pt")
    with pytest.raises(UserInputError, match="holds no training state"):
        train_main([*base, "--out", str(copied), "--resume"])
    state = read_checkpoint(out / "last.pt")
    state["meta"]["world_size"] = 2  # as torchrun --nproc_per_node 2 writes it
    torch.save(state, out / "last.pt")
    with pytest.raises(UserInputError, match=r"the number of processes \(2 then, 1 now\) differ"):
        train_main([*base, "--out", str(out), "--resume"])
    shutil.copyfile(out / "best.pt", out / "stage1.pt")  # beside them, but never written by the run: allowed
    train_main([*base, "--out", str(out), "--init-from", str(out / "stage1.pt"), "--epochs", "1", "--overwrite"])
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="--device cuda: no CUDA device"):
            train_main([*base, "--out", str(tmp_path / "gpu"), "--device", "cuda"])


def test_a_run_folder_is_not_wiped_by_a_forgotten_resume(tmp_path, tiny_csv):
    """Without --resume a finished run's last.pt, best.pt and history were replaced by a new run's first epoch."""
    base, out = ["--data", str(tiny_csv), *TINY, "--out", str(tmp_path / "run")], tmp_path / "run"
    train_main(base)
    before = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt", "history.csv")}
    with pytest.raises(UserInputError, match="already holds a run: add --resume to continue it, --overwrite"):
        train_main([*base, "--stop-after", "1"])
    assert {name: (out / name).read_bytes() for name in before} == before
    with pytest.raises(SystemExit):
        parse_args([*base, "--resume", "--overwrite"])
    train_main([*base, "--overwrite", "--stop-after", "1"])
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [1]


def test_a_home_folder_tilde_in_paths_is_expanded(monkeypatch, tmp_path):
    """`out: ~/runs/A` in a --config file made a folder named "~" in the current folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = TrainConfig(data="~/fer.csv", out="~/runs/A", init_from="~/A.pt")
    assert (cfg.data, cfg.out, cfg.init_from) == (f"{tmp_path}/fer.csv", f"{tmp_path}/runs/A", f"{tmp_path}/A.pt")


def test_a_warm_up_of_exactly_one_step_does_not_crash_the_schedule(tmp_path, tiny_csv):
    """48 images, batch 16, 2 epochs: 6 steps; a warm-up of 1/6 is one step, where OneCycleLR divided by zero."""
    train_main(["--data", str(tiny_csv), "--out", str(tmp_path / "run"), *TINY, "--warmup-pct", str(1 / 6)])
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 2


def test_a_full_disk_while_saving_a_checkpoint_is_one_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    target.write_bytes(b"the earlier checkpoint")

    def disk_full(obj, file, *args, **kwargs):
        Path(file).write_bytes(b"PK half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4194304 vs 4194240\nmore")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserInputError, match=r"last\.pt: could not write the results \(writing failed: \[enforce"):
        save_checkpoint(target, {"format": "x"})
    assert target.read_bytes() == b"the earlier checkpoint" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_each_rank_draws_its_own_augmentation_and_rank_0_keeps_the_single_process_stream():
    assert epoch_seed(3, 7) == epoch_seed(3, 7, rank=0) == 3 * 100_003 + 7
    seeds = {epoch_seed(3, 7, rank) for rank in range(8)} | {epoch_seed(3, 8, rank) for rank in range(8)}
    assert len(seeds) == 16


def test_train_one_epoch_reseeds_augmentation_by_rank_and_shards_the_shuffle(monkeypatch):
    """Rank 1 of 2 draws its augmentation from its own seed and trains on the other half of one shared shuffle;
    rank 0 draws exactly what a single process draws (so one-GPU and DDP rank-0 runs agree)."""
    drawn: list[tuple[int, int, tuple[int, ...]]] = []

    def recording(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        drawn.append((rank, generator.initial_seed(), tuple(int(v) for v in x.flatten(1)[:, 0].mul(255).round())))
        return x

    monkeypatch.setitem(train.RECIPES, "crp", train.RECIPES["crp"].__class__("crp", "spy", recording))
    monkeypatch.setattr(train.dist, "all_reduce", lambda tensor: None)  # no process group: one rank at a time
    monkeypatch.setattr(train, "gather_from_ranks", lambda values, info: values)
    images = torch.arange(8, dtype=torch.uint8).mul(30).view(8, 1, 1, 1).expand(8, 1, 48, 48).contiguous()
    labels = torch.arange(8) % 7
    cfg = TrainConfig(batch_size=4, seed=3, epochs=1, channels_last=False)
    model_cfg = ModelConfig(stem_stride=2)
    for rank, world_size in ((0, 1), (0, 2), (1, 2)):
        model = build_model(model_cfg)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        train.train_one_epoch(
            model,
            images,
            labels,
            epoch=0,
            cfg=cfg,
            model_cfg=model_cfg,
            optimizer=optimizer,
            scheduler=scheduler,
            criterion=nn.CrossEntropyLoss(),
            dist_info=train.Distributed(rank=rank, world_size=world_size),
        )
    single, *_ = [d for d in drawn if d[0] == 0]
    rank0, rank1 = drawn[-2], drawn[-1]
    assert single[1] == rank0[1] == epoch_seed(3, 0) and rank1[1] == epoch_seed(3, 0, rank=1)
    assert set(rank0[2]).isdisjoint(rank1[2]) and sorted(rank0[2] + rank1[2]) == [30 * i for i in range(8)]
    assert rank0[2] == single[2][:4]  # rank 0's shard is the first half of the single process's order


def test_carved_validation_split_does_not_follow_the_run_seed(tmp_path):
    """fit_ensemble, evaluate and distill load the data with the default split: training must select on it too."""
    root = write_fer_folder(tmp_path / "fer", per_class=4, prefixes=False)
    train_main(["--data", str(root), "--out", str(tmp_path / "run"), "--seed", "5", "--stop-after", "1", *TINY])
    meta = load_classifier(tmp_path / "run" / "best.pt").meta
    assert meta["data_fingerprint"] == load_fer2013(root).fingerprint()


def test_init_from_starts_at_the_given_weights_and_checks_the_architecture(tmp_path, tiny_csv):
    first = tmp_path / "first"
    train_main(["--data", str(tiny_csv), "--out", str(first), "--stop-after", "1", *TINY])
    tuned = tmp_path / "tuned"
    still = [a if a != "3e-3" else "1e-12" for a in TINY]  # an LR this small leaves the weights where they start
    train_main(["--data", str(tiny_csv), "--out", str(tuned), "--init-from", str(first / "best.pt"), *still])
    start, after = read_checkpoint(first / "best.pt")["state_dict"], read_checkpoint(tuned / "last.pt")["state_dict"]
    for key in parameter_keys(start):
        torch.testing.assert_close(after[key], start[key], atol=1e-6, rtol=0)
    tuned_meta = load_classifier(tuned / "best.pt").meta
    assert tuned_meta["train_config"]["init_from"] == str(first / "best.pt")
    parent = tuned_meta["fine_tuned_from"]  # the lineage the model card reports
    assert parent["epoch"] == 1 and parent["file"] == "best.pt" and parent["sha256"] == file_sha256(first / "best.pt")
    assert load_classifier(tuned / "best.pt").name == "first"  # a later stage keeps its model's name, not OUT's
    with pytest.raises(UserInputError, match=r"stem_stride differs \(2 there, 1 in this run\)"):
        train_main(
            [
                "--data",
                str(tiny_csv),
                "--out",
                str(tmp_path / "x"),
                "--init-from",
                str(first / "best.pt"),
                *TINY,
                "--stem-stride",
                "1",
            ]
        )


def test_swa_saves_the_mean_of_the_epoch_weights_and_resumes_exactly(tmp_path, tiny_csv):
    straight, split = tmp_path / "straight", tmp_path / "split"
    swa = ["--data", str(tiny_csv), "--schedule", "swa", *TINY]
    train_main([*swa, "--out", str(straight)])
    train_main([*swa, "--out", str(split), "--stop-after", "1"])
    epoch1 = read_checkpoint(split / "last.pt")["state_dict"]  # the live weights after epoch 1
    train_main([*swa, "--out", str(split), "--resume"])
    last = read_checkpoint(split / "last.pt")
    epoch2, mean = last["state_dict"], last["training"]["averaged"]
    assert int(mean["n_averaged"]) == 2
    for key in parameter_keys(epoch2):
        torch.testing.assert_close(mean[f"module.{key}"], (epoch1[key] + epoch2[key]) / 2, rtol=1e-5, atol=1e-6)
    best = read_checkpoint(split / "best.pt")["state_dict"]  # best is the averaged model (epoch 2 or 1 alone)
    assert not all(torch.equal(best[k], epoch2[k]) for k in best)
    straight_mean = read_checkpoint(straight / "last.pt")["training"]["averaged"]
    for key, tensor in straight_mean.items():
        assert torch.equal(tensor, mean[key]), key
    history = pd.read_csv(split / "history.csv")
    assert history["live_val_acc"].notna().all() and history["val_acc"].notna().all()
    with pytest.raises(UserInputError, match="schedule differ"):
        train_main(["--data", str(tiny_csv), "--out", str(split), "--resume", *TINY])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("schedule: cosine\n")
    with pytest.raises(UserInputError, match="unknown schedule 'cosine'"):
        train_main(["--config", str(unknown), "--data", str(tiny_csv), "--out", str(tmp_path / "x"), *TINY])
    unknown.write_text("recipe: cutout\n")  # before, a KeyError once the data had loaded
    with pytest.raises(UserInputError, match="unknown recipe 'cutout'"):
        train_main(["--config", str(unknown), "--data", str(tiny_csv), "--out", str(tmp_path / "x"), *TINY])


def test_recalibrated_batchnorm_sees_inference_activations_only():
    model = torch.nn.Sequential(torch.nn.Dropout(0.9), torch.nn.BatchNorm2d(1))  # dropout on would skew the stats
    config = ModelConfig()
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    recalibrate_batchnorm(model, images, config, torch.device("cpu"), batch_size=20)  # equal batches: mean of means
    inputs = (images.float() / 255.0 - config.mean[0]) / config.std[0]
    norm = model[1]
    torch.testing.assert_close(norm.running_mean, inputs.mean().reshape(1), rtol=1e-4, atol=1e-5)
    batch_vars = torch.stack([inputs[:20].var(), inputs[20:].var()])  # unbiased, as BatchNorm keeps it
    torch.testing.assert_close(norm.running_var, batch_vars.mean().reshape(1), rtol=1e-4, atol=1e-5)
    assert norm.momentum == 0.1 and not norm.training


def test_the_run_folder_is_checked_and_made_before_the_first_epoch(tmp_path, tiny_csv, monkeypatch):
    """history.csv as a folder was an error after the first epoch, and an --out mkdir cannot make (under /proc or
    /sys, where os.access lets root past) a traceback there; best.pt as a folder read as a run already there, and
    last.pt as one as "no such checkpoint file" to --resume."""
    monkeypatch.setattr(train, "build_model", lambda *a, **k: pytest.fail("built the model before checking --out"))
    base = ["--data", str(tiny_csv), *TINY]
    for name, flags in (("history.csv", []), ("best.pt", []), ("last.pt", ["--resume"])):
        out = tmp_path / f"run_{name}"
        (out / name).mkdir(parents=True)
        with pytest.raises(UserInputError, match=f"--out {out}: {name} is a folder; the results need those names"):
            train_main([*base, "--out", str(out), *flags])
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here for a folder mkdir cannot make")
    monkeypatch.setattr(train.cli.os, "access", lambda path, mode: True)  # as for root
    with pytest.raises(UserInputError, match="--out /proc/fer_core_run: cannot create the output folder"):
        train_main([*base, "--out", "/proc/fer_core_run"])
