"""One emotion classifier at inference time: face crops in, 7 probabilities out, batched.

Two runtimes behind one call: onnxruntime (fast on CPU) and PyTorch (CUDA, or where no ONNX
file exists). Crops of any size, colour or gray, go through the same preprocessing as training.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from fer_core.checkpoint import LoadedClassifier, load_classifier
from fer_core.cli import UserInputError
from fer_core.imageio import over_white, to_8bit
from fer_core.models import ModelConfig, normalise
from fer_core.tta import NO_TTA, average_views, expand, tta_views

#: Largest batch handed to a runtime in one call (memory, not speed: larger batches are no faster on CPU).
MAX_RUNTIME_BATCH = 512


class ProbabilityModel(Protocol):
    def __call__(self, batch_uint8: np.ndarray) -> np.ndarray: ...


def to_gray(crop: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx2 (gray + alpha), HxWx3 (RGB) or HxWx4 (RGBA) uint8 to HxW uint8 gray; alpha over white."""
    if crop.ndim not in (2, 3) or (crop.ndim == 3 and crop.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"expected a gray, gray + alpha, RGB or RGBA face, got an array of shape {crop.shape}")
    if crop.size == 0:
        raise ValueError(f"an empty face crop (shape {crop.shape}) has no pixels to classify")
    if crop.ndim == 2:
        return crop
    if crop.shape[2] in (2, 4):
        crop = over_white(crop)
    if crop.shape[2] == 1:
        return crop[:, :, 0]
    return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)


def prepare_batch(crops: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Face crops to one (N, 1, size, size) uint8 batch (area resize when shrinking, as FER did)."""
    batch = np.empty((len(crops), 1, size, size), dtype=np.uint8)
    for i, crop in enumerate(crops):
        gray = to_gray(to_8bit(np.asarray(crop)))  # any pixel type, by the rule files are read by
        shrinking = gray.shape[0] > size or gray.shape[1] > size
        batch[i, 0] = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return batch


class TorchRuntime:
    """PyTorch eager inference (CPU or CUDA)."""

    name = "torch"

    def __init__(self, loaded: LoadedClassifier, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.config = loaded.config
        self.model = loaded.model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, batch_uint8: np.ndarray) -> np.ndarray:
        # a copy when needed: from_numpy refuses negative strides (a mirrored view) and warns on read-only arrays
        x = normalise(torch.from_numpy(np.require(batch_uint8, requirements=("C", "W"))).to(self.device), self.config)
        return torch.softmax(self.model(x).float(), dim=1).cpu().numpy()


class OnnxRuntime:
    """onnxruntime CPU inference of an exported classifier (softmax is inside the graph)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, config: ModelConfig, threads: int = 0) -> None:
        from fer_core.onnx_session import cpu_session

        self.session = cpu_session(onnx_path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.config = config

    def __call__(self, batch_uint8: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.config.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.config.std, np.float32).reshape(1, -1, 1, 1)
        x = (batch_uint8.astype(np.float32) / 255.0 - mean) / std
        return self.session.run(None, {self.input_name: x})[0]


def cached_onnx_runtime(loaded: LoadedClassifier) -> OnnxRuntime:
    """onnxruntime on this network's cached export (`export.open_cached_export`: exported again if damaged)."""
    from fer_core.export import classifier_onnx_path, export_classifier, open_cached_export

    return open_cached_export(
        classifier_onnx_path(loaded),
        lambda path: OnnxRuntime(path, loaded.config),
        lambda path: export_classifier(loaded, path),
        Path(loaded.path),
    )


class EmotionClassifier:
    """A named classifier: metadata from its checkpoint plus the runtime that executes it."""

    def __init__(self, loaded: LoadedClassifier, runtime: ProbabilityModel) -> None:
        self.name = loaded.name
        self.config = loaded.config
        self.meta: dict[str, Any] = loaded.meta
        self.path = loaded.path
        self.sha256 = loaded.sha256
        self.runtime = runtime
        #: Why this member runs on another runtime than asked for ("" when it runs as asked): for the app's sidebar.
        self.runtime_warning = ""

    @property
    def runtime_name(self) -> str:
        return getattr(self.runtime, "name", type(self.runtime).__name__)

    @classmethod
    def load(cls, path: str | Path, runtime: str = "auto", device: str = "cpu") -> EmotionClassifier:
        """runtime: "torch", "onnxruntime", or "auto" (onnxruntime on CPU, torch on CUDA)."""
        loaded = load_classifier(path)
        use_cuda = device.startswith("cuda") and torch.cuda.is_available()
        chosen_for_us = runtime == "auto"
        if chosen_for_us:
            runtime = "torch" if use_cuda else "onnxruntime"
        if runtime == "onnxruntime":
            from fer_core.export import cache_dir

            try:
                onnx_runtime = cached_onnx_runtime(loaded)
            except OSError as err:  # a read-only home or cache folder: the export has nowhere to go
                problem = f"cannot write its ONNX export under {cache_dir()} ({err.strerror or err})"
                if not chosen_for_us:
                    raise UserInputError(f"{loaded.path}: {problem}; set FER_CACHE_DIR to a writable folder") from err
                classifier = cls(loaded, TorchRuntime(loaded, "cpu"))  # slower on CPU, the same probabilities
                classifier.runtime_warning = f"{classifier.name}: {problem}; running it on PyTorch instead."
                warnings.warn(classifier.runtime_warning, RuntimeWarning, stacklevel=2)
                return classifier
            return cls(loaded, onnx_runtime)
        if runtime == "torch":
            return cls(loaded, TorchRuntime(loaded, device if use_cuda else "cpu"))
        raise ValueError(f"unknown runtime {runtime!r}; use auto, torch or onnxruntime")

    def predict_batch(self, batch_uint8: np.ndarray, tta: str = NO_TTA) -> np.ndarray:
        """(N, 1, S, S) uint8 to (N, 7) probabilities, averaged over the views of the named TTA set."""
        if len(batch_uint8) == 0:
            return np.zeros((0, self.config.num_classes), np.float32)
        views = tta_views(tta)
        if len(views) == 1 and views[0].is_identity:
            return self._run(batch_uint8)
        return average_views(self._run(expand(batch_uint8, views)), len(views))

    def _run(self, batch_uint8: np.ndarray) -> np.ndarray:
        """The runtime over at most `MAX_RUNTIME_BATCH` crops a call: at stem stride 1 a few thousand crops at once
        need gigabytes of activations, and TTA multiplies the caller's batch by its number of views."""
        if len(batch_uint8) <= MAX_RUNTIME_BATCH:
            return self.runtime(batch_uint8)
        parts = range(0, len(batch_uint8), MAX_RUNTIME_BATCH)
        return np.concatenate([self.runtime(batch_uint8[i : i + MAX_RUNTIME_BATCH]) for i in parts])

    def predict(self, crops: Sequence[np.ndarray], tta: str = NO_TTA) -> np.ndarray:
        return self.predict_batch(prepare_batch(crops, self.config.input_size), tta)
