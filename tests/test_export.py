"""ONNX export matches PyTorch and is what the CPU runtime uses."""

from __future__ import annotations

import numpy as np

from fer_core.checkpoint import load_classifier
from fer_core.classifier import EmotionClassifier
from fer_core.export import MAX_PROB_DIFF, classifier_onnx_path, max_prob_difference


def test_onnx_probabilities_match_torch(fake_weights):
    loaded = load_classifier(fake_weights / "A_crp.pt")
    onnx_path = classifier_onnx_path(loaded)
    assert onnx_path.exists()
    assert max_prob_difference(loaded, onnx_path, loaded.config, n=32) <= MAX_PROB_DIFF


def test_auto_runtime_is_onnxruntime_on_cpu_and_agrees(fake_weights):
    fast = EmotionClassifier.load(fake_weights / "B_mixcut.pt")
    eager = EmotionClassifier.load(fake_weights / "B_mixcut.pt", runtime="torch")
    assert fast.runtime_name == "onnxruntime" and eager.runtime_name == "torch"
    crops = [np.random.default_rng(i).integers(0, 256, size=(60 + i, 50, 3), dtype=np.uint8) for i in range(4)]
    np.testing.assert_allclose(fast.predict(crops), eager.predict(crops), atol=MAX_PROB_DIFF)
