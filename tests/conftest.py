"""Shared fixtures: generated classifier weights, paths, and the optional real data."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from fer_core.augment import RECIPES
from fer_core.checkpoint import build_checkpoint, save_checkpoint
from fer_core.ensemble import write_spec
from fer_core.models import ModelConfig, build_model
from tests.fer_fixtures import write_fer_csv

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FER_DATA = SHARED_DATA / "fer2013"
SHIPPED_WEIGHTS = REPO / "weights"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def make_classifier_checkpoint(path: Path, name: str, seed: int) -> Path:
    """An untrained B0 whose batch-norm statistics were warmed on noise, so outputs differ by input.

    The statistics are the plain mean over the warm-up batches (momentum None) of inputs spread like normalised
    pixels: with the default momentum, three batches left them near their initial values, every block shrank the
    differences between inputs about 30 times, and every face got the same probabilities, so no test could see
    faces or labels mixed up."""
    torch.manual_seed(seed)
    config = ModelConfig(stem_stride=2)
    model = build_model(config)
    torch.nn.init.normal_(cast(torch.nn.Linear, cast(torch.nn.Sequential, model.classifier)[-1]).weight, std=0.01)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model((torch.rand(16, 1, 48, 48) - 0.5) / 0.25)  # uniform pixels through `normalise`
    model.eval()
    recipe = RECIPES["mixcut" if "mix" in name else "crp"].description  # as training records it
    save_checkpoint(path, build_checkpoint(model, config, {"name": name, "recipe": recipe, "metrics": {}}))
    return path


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FER-2013 CSV of 76 generated faces (48 Training): enough for one-epoch training runs."""
    return write_fer_csv(tmp_path_factory.mktemp("fer") / "fer.csv", n_train=48, n_public=14, n_private=14)


@pytest.fixture(scope="session")
def fake_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder like the shipped one (two classifiers + ensemble.json), untrained."""
    folder = tmp_path_factory.mktemp("weights")
    members = []
    for seed, name in enumerate(("A_crp", "B_mixcut")):
        make_classifier_checkpoint(folder / f"{name}.pt", name, seed)
        members.append({"name": name, "file": f"{name}.pt", "weight": 0.5})
    write_spec(folder / "ensemble.json", {"models": members, "tta": "none"})
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX exports and other caches go to a per-session temp dir, never the user's home."""
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fer_cache"))


def shipped_weights_present() -> bool:
    return (SHIPPED_WEIGHTS / "ensemble.json").is_file()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every connection or DNS lookup; ultralytics swallows errors, so check the record."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small-batch inference on busy shared cores is many times faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def deny_listing(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Call it with a folder to make listing it fail, as chmod 000 does for anyone but root (tests may run as root,
    whom permissions do not stop)."""
    denied: set[Path] = set()
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return denied.add
