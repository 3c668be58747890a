"""Why a model said what it said: class activation maps on a face, and how faithful each kind of map is.

    explainer = FaceExplainer.load(member.path)
    result = explainer.explain(face_crop)            # predicted class
    result = explainer.explain(face_crop, "happy")   # or a chosen one
    result.overlay                                   # RGB uint8, the 48x48 face upscaled with the heat map

    python -m fer_core.explain --data ../shared/data/fer2013 --faces 256   # how faithful each kind of map is

The map is pytorch-grad-cam's HiResCAM on EfficientNet block 2 (24x24 at 48 px with the stride-1 stem),
chosen by how faithful it is: the library's ROAD score (remove the pixels a map ranks most or least relevant,
with noisy linear imputation, and see how far the class probability falls) on PublicTest faces. Grad-CAM on the
last block, the textbook choice, is a 3x3 map at 48 px and scored no better than a random map. Maps need
gradients, so they run the PyTorch checkpoint even when the app classifies with onnxruntime.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fer_core import cli
from fer_core.checkpoint import load_classifier
from fer_core.classifier import prepare_batch
from fer_core.labels import SPLITS, VAL_SPLIT
from fer_core.models import ModelConfig, normalise

#: Side of the returned overlay: the 48 px face is far too small to see a heat map on.
OVERLAY_SIZE = 192
#: Fractions of the pixels ROAD removes (percent), most relevant first and least relevant first.
ROAD_PERCENTILES = (20, 40, 60, 80)


class CamChoice(NamedTuple):
    """A kind of map: a pytorch-grad-cam method and the EfficientNet block (`model.features[block]`) it reads."""

    method: str
    block: int

    @property
    def label(self) -> str:
        return f"{self.method}, block {self.block}"

    def cam(self, model: nn.Module) -> Any:
        """The library's CAM object, hooked on this block (a context manager: it removes its hooks on exit)."""
        import pytorch_grad_cam

        features = getattr(model, "features", None)
        if features is None:
            raise TypeError(f"{type(model).__name__} has no `features`; the maps expect an EfficientNet")
        return getattr(pytorch_grad_cam, self.method)(model=model, target_layers=[features[self.block]])


#: What the app shows: the most faithful map of those still readable as regions (block 1's 48x48 map scores a
#: little higher on ROAD but is pixel speckle); see the module docstring and `python -m fer_core.explain`.
SHOWN_CAM = CamChoice("HiResCAM", 2)
#: The candidates `python -m fer_core.explain` scores: the textbook Grad-CAM on the last block, HiResCAM on the
#: 48, 24 and 12 px blocks, and a random map as the floor.
CANDIDATES = (
    CamChoice("GradCAM", 8),  # B0's last block, features[-1]
    CamChoice("HiResCAM", 1),
    SHOWN_CAM,
    CamChoice("HiResCAM", 3),
    CamChoice("RandomCAM", 8),
)


@dataclass(frozen=True)
class Explanation:
    """A heat-map overlay for one face and one class, plus the model's probabilities for context."""

    overlay: np.ndarray
    heatmap: np.ndarray
    target: str
    probs: dict[str, float]


class FaceExplainer:
    """Class activation maps for one classifier; a lock serialises calls because the maps hook the shared model."""

    def __init__(self, model: nn.Module, config: ModelConfig, name: str = "model", cam: CamChoice = SHOWN_CAM) -> None:
        self.model = model.cpu().eval()
        self.config = config
        self.name = name
        self.cam = cam
        self._lock = threading.RLock()  # held across a forward pass and the map: another thread's hooks must not see it

    @classmethod
    def load(cls, checkpoint_path: str | Path) -> FaceExplainer:
        loaded = load_classifier(checkpoint_path)
        return cls(loaded.model, loaded.config, loaded.name)

    def heatmaps(self, x: torch.Tensor, targets: Sequence[Any], cam: CamChoice | None = None) -> np.ndarray:
        """(N, H, W) maps in 0..1 for normalised inputs `x` and pytorch-grad-cam `targets`, one per input."""
        with self._lock, torch.enable_grad(), (cam or self.cam).cam(self.model) as mapper:
            return np.nan_to_num(mapper(input_tensor=x, targets=list(targets)))

    def road_scores(self, faces_uint8: np.ndarray, cam: CamChoice | None = None, batch_size: int = 32) -> np.ndarray:
        """pytorch-grad-cam's ROAD score of a kind of map for each (N, 48, 48) face, explaining the model's own top
        class: half the fall in its probability when the pixels the map ranks most relevant are removed, minus the
        fall when the least relevant are, averaged over `ROAD_PERCENTILES`. Faithful maps score high, random ones ~0.
        The maps are made as `explain` makes them (for the class score), so the score is of the map the app shows."""
        from pytorch_grad_cam.metrics.road import ROADCombined
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

        road = ROADCombined(percentiles=list(ROAD_PERCENTILES))
        scores = []
        for start in range(0, len(faces_uint8), batch_size):
            batch = np.ascontiguousarray(faces_uint8[start : start + batch_size, None])
            x = normalise(torch.from_numpy(batch), self.config)
            with self._lock:
                with torch.no_grad():
                    predicted = self.model(x).argmax(1).tolist()
                maps = self.heatmaps(x, [ClassifierOutputTarget(index) for index in predicted], cam)
                measured = [ClassifierOutputSoftmaxTarget(index) for index in predicted]
                scores.append(np.asarray(road(x, maps, measured, self.model), dtype=np.float64).reshape(-1))
        return np.concatenate(scores)

    def explain(self, face_crop: np.ndarray, target: str | None = None, size: int = OVERLAY_SIZE) -> Explanation:
        """Heat map of what in `face_crop` raised the score of `target` (default: the model's own top class)."""
        from pytorch_grad_cam.utils.image import show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        classes = list(self.config.class_names)
        if target is not None and target not in classes:
            raise ValueError(f"unknown class {target!r}; expected one of {classes}")
        batch = prepare_batch([face_crop], self.config.input_size)
        x = normalise(torch.from_numpy(batch), self.config)
        with self._lock:
            with torch.no_grad():
                probs = torch.softmax(self.model(x).float(), dim=1)[0].numpy()
            index = int(probs.argmax()) if target is None else classes.index(target)
            heat = self.heatmaps(x, [ClassifierOutputTarget(index)])[0]
        face = cv2.resize(batch[0, 0], (size, size), interpolation=cv2.INTER_CUBIC)
        face_rgb = np.repeat(face[:, :, None], 3, axis=2).astype(np.float32) / 255.0
        heat_big = cv2.resize(heat.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        overlay = show_cam_on_image(face_rgb, np.clip(heat_big, 0.0, 1.0), use_rgb=True, image_weight=0.55)
        return Explanation(overlay, heat_big, classes[index], dict(zip(classes, map(float, probs), strict=True)))


def faithfulness(
    checkpoints: Sequence[Path], faces_uint8: np.ndarray, candidates: Sequence[CamChoice] = CANDIDATES, seed: int = 0
) -> pd.DataFrame:
    """One row per model and candidate: mean ROAD score over the faces and its standard error."""
    rows = []
    for path in checkpoints:
        explainer = FaceExplainer.load(path)
        for cam in tqdm(candidates, desc=explainer.name, unit="map"):
            np.random.seed(seed)  # RandomCAM draws from NumPy's global generator
            torch.manual_seed(seed)  # ROAD's imputation adds noise
            scores = explainer.road_scores(faces_uint8, cam)
            rows.append(
                {
                    "model": explainer.name,
                    "map": cam.label,
                    "road": float(scores.mean()),
                    "sem": float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else float("nan"),
                    "shown_in_app": cam == SHOWN_CAM,
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    from fer_core.data import load_fer2013
    from fer_core.ensemble import read_spec
    from fer_core.pipeline import DEFAULT_WEIGHTS

    parser = cli.argument_parser("explain", "How faithful each kind of heat map is (ROAD, pytorch-grad-cam) on faces.")
    parser.add_argument("--data", required=True, help="FER-2013 folder or CSV")
    parser.add_argument("--split", default=VAL_SPLIT, choices=SPLITS, help="faces to score the maps on")
    parser.add_argument("--faces", type=int, default=256, help="how many faces of the split, drawn with --seed")
    parser.add_argument("--seed", type=cli.seed, default=1, help="which faces; also RandomCAM's and ROAD's noise")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="folder with ensemble.json")
    cli.add_skip_bad_option(parser)
    args = parser.parse_args(argv)
    if args.faces < 1:
        parser.error("--faces must be at least 1")
    split = load_fer2013(args.data, skip_bad=args.skip_bad)[args.split]
    chosen = np.random.default_rng(args.seed).choice(len(split), min(args.faces, len(split)), replace=False)
    members = [args.weights / entry["file"] for entry in read_spec(args.weights)["models"]]
    table = faithfulness(members, split.images[np.sort(chosen)], seed=args.seed)
    print(f"ROAD on {len(chosen)} {args.split} faces (higher is more faithful; a random map is the floor):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:+.4f}"))


__all__ = [
    "CANDIDATES",
    "OVERLAY_SIZE",
    "SHOWN_CAM",
    "CamChoice",
    "Explanation",
    "FaceExplainer",
    "faithfulness",
]

if __name__ == "__main__":
    cli.run(main)
