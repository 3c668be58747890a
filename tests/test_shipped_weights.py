"""The shipped weights: intact files, and the PrivateTest accuracy the model card states (needs the real data)."""

from __future__ import annotations

import json

import pytest

from fer_core.data import load_fer2013
from fer_core.ensemble import Ensemble
from fer_core.evaluate import evaluate_probs, predict_split
from fer_core.export import file_sha256
from fer_core.model_card import ACCURACY_DIGITS, pct
from tests.conftest import FER_DATA, SHIPPED_WEIGHTS, shipped_weights_present

pytestmark = pytest.mark.skipif(not shipped_weights_present(), reason="no shipped weights in weights/")


def test_checkpoint_hashes_match_ensemble_json_and_model_card():
    spec = json.loads((SHIPPED_WEIGHTS / "ensemble.json").read_text())
    card = (SHIPPED_WEIGHTS / "MODEL_CARD.md").read_text()
    for member in spec["models"]:
        digest = file_sha256(SHIPPED_WEIGHTS / member["file"])
        assert digest == member["sha256"], member["file"]
        assert digest in card, f"{member['file']} sha256 missing from the model card"


@pytest.mark.data
@pytest.mark.skipif(not FER_DATA.is_dir(), reason="../shared/data/fer2013 not present")
def test_private_test_accuracy_reaches_the_model_card():
    recorded = json.loads((SHIPPED_WEIGHTS / "metrics_PrivateTest.json").read_text())
    card = (SHIPPED_WEIGHTS / "MODEL_CARD.md").read_text()
    split = load_fer2013(FER_DATA)["PrivateTest"]
    report = evaluate_probs(split, predict_split(Ensemble.load(SHIPPED_WEIGHTS), split, progress=False))
    assert report["n"] == recorded["n"] == 3589
    for name, scores in recorded["models"].items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {name} | "))
        in_card = pct(scores["accuracy"], ACCURACY_DIGITS) in row
        assert in_card, f"model card row for {name} disagrees with metrics_PrivateTest.json"
        # onnxruntime vs the PyTorch run that wrote the file may flip a borderline face or two
        assert report["models"][name]["accuracy"] >= scores["accuracy"] - 0.002, name
