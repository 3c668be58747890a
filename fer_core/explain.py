"""Why a model said what it said: Grad-CAM heat maps on a face, and how far the models disagree.

    explainer = FaceExplainer.load(member.path)
    result = explainer.explain(face_crop)            # predicted class
    result = explainer.explain(face_crop, "happy")   # or a chosen one
    result.overlay                                   # RGB uint8, the 48x48 face upscaled with the heat map

Grad-CAM needs gradients, so it runs the PyTorch checkpoint even when the app classifies with
onnxruntime. The target layer is the last convolution block of EfficientNet (`model.features[-1]`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from fer_core.checkpoint import load_classifier
from fer_core.classifier import prepare_batch
from fer_core.labels import EMOTIONS
from fer_core.models import ModelConfig, normalise

#: Side of the returned overlay: the 48 px face is far too small to see a heat map on.
OVERLAY_SIZE = 192


@dataclass(frozen=True)
class Explanation:
    """A Grad-CAM overlay for one face and one class, plus the model's probabilities for context."""

    overlay: np.ndarray
    heatmap: np.ndarray
    target: str
    probs: dict[str, float]


class FaceExplainer:
    """Grad-CAM for one classifier; a lock serialises calls because Grad-CAM hooks the shared model."""

    def __init__(self, model: nn.Module, config: ModelConfig, name: str = "model") -> None:
        self.model = model.cpu().eval()
        self.config = config
        self.name = name
        self._lock = threading.Lock()

    @classmethod
    def load(cls, checkpoint_path: str | Path) -> FaceExplainer:
        loaded = load_classifier(checkpoint_path)
        return cls(loaded.model, loaded.config, loaded.name)

    def target_layer(self) -> nn.Module:
        """The last convolution block: the deepest layer that still has a spatial map."""
        features = getattr(self.model, "features", None)
        if features is None:
            raise TypeError(f"{type(self.model).__name__} has no `features`; Grad-CAM expects an EfficientNet")
        return features[-1]

    def explain(self, face_crop: np.ndarray, target: str | None = None, size: int = OVERLAY_SIZE) -> Explanation:
        """Heat map of where the model looked for `target` (default: its own top class) in `face_crop`."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        classes = list(self.config.class_names)
        if target is not None and target not in classes:
            raise ValueError(f"unknown class {target!r}; expected one of {classes}")
        batch = prepare_batch([face_crop], self.config.input_size)
        x = normalise(torch.from_numpy(batch), self.config)
        with self._lock, torch.enable_grad():
            with torch.no_grad():
                probs = torch.softmax(self.model(x).float(), dim=1)[0].numpy()
            index = int(probs.argmax()) if target is None else classes.index(target)
            with GradCAM(model=self.model, target_layers=[self.target_layer()]) as cam:
                heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])[0]
        face = cv2.resize(batch[0, 0], (size, size), interpolation=cv2.INTER_CUBIC)
        face_rgb = np.repeat(face[:, :, None], 3, axis=2).astype(np.float32) / 255.0
        heat_big = cv2.resize(np.nan_to_num(heat).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        overlay = show_cam_on_image(face_rgb, np.clip(heat_big, 0.0, 1.0), use_rgb=True, image_weight=0.55)
        return Explanation(overlay, heat_big, classes[index], dict(zip(classes, map(float, probs), strict=True)))


@dataclass(frozen=True)
class ModelView:
    """One model's verdict on a face: what the app shows when the user picks that model."""

    label: str
    confidence: float
    probs: dict[str, float]


def model_view(probs: Mapping[str, float]) -> ModelView:
    """Top class and its probability from a probability dict (ties go to the earlier emotion)."""
    label = max(EMOTIONS, key=lambda name: (probs.get(name, 0.0), -EMOTIONS.index(name)))
    return ModelView(label, float(probs.get(label, 0.0)), {name: float(probs.get(name, 0.0)) for name in EMOTIONS})


@dataclass(frozen=True)
class Disagreement:
    """How two models differ on one face: different top classes, and the total-variation distance."""

    labels: dict[str, str]
    distance: float

    @property
    def disagree(self) -> bool:
        return len(set(self.labels.values())) > 1


def disagreement(model_probs: Mapping[str, Mapping[str, float]]) -> Disagreement:
    """Compare the models' top classes and distributions (max pairwise total variation, 0 = identical, 1 = disjoint)."""
    names = list(model_probs)
    vectors = {name: np.array([model_probs[name].get(e, 0.0) for e in EMOTIONS]) for name in names}
    distance = max(
        (0.5 * float(np.abs(vectors[a] - vectors[b]).sum()) for i, a in enumerate(names) for b in names[i + 1 :]),
        default=0.0,
    )
    return Disagreement({name: model_view(model_probs[name]).label for name in names}, distance)


__all__ = ["OVERLAY_SIZE", "Disagreement", "Explanation", "FaceExplainer", "ModelView", "disagreement", "model_view"]
