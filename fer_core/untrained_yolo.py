"""An untrained one-class YOLO11n face model whose outputs depend on the image: a stand-in for tests and timing.

Nothing here may detect a face. It exists because the trained `weights/face_yolo.pt` is not in every checkout,
while speed (which does not depend on weight values) and the agreement of runtimes can be measured without it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fer_core.detection import import_ultralytics

#: Score logits of the stand-in on its calibration images: sigmoid(N(-2, 2)) spreads scores over 0..1.
LOGIT_MEAN = -2.0
LOGIT_STD = 2.0
#: Side of the calibration images.
CALIBRATION_SIDE = 320


def build_untrained_yolo(path: str | Path, images: Sequence[np.ndarray] = (), seed: int = 0) -> Path:
    """Save a one-class ("face") YOLO11n with random weights: a stand-in for tests and timing, never for detection.

    Built offline from the yolo11n.yaml bundled with ultralytics. Speed does not depend on weight values, but a
    freshly initialised network's activations vanish through its ~100 layers, so every input would give the same
    output and no test could tell a right preprocessing from a wrong one. So batch-norm statistics are measured on
    `images` (HxWx3 uint8 RGB, e.g. a real photo) plus seeded noise, and the score layer is rescaled so that scores
    spread over 0..1 instead of saturating: outputs then depend on the image, and ties between boxes are rare.
    """
    import torch
    import yaml

    ultralytics = import_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    spec = yaml_model_load("yolo11n.yaml")
    spec["nc"] = 1
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "yolo11n-face.yaml"  # the name tells ultralytics the "n" scale
        cfg.write_text(yaml.safe_dump({k: v for k, v in spec.items() if k != "yaml_file"}, sort_keys=False))
        model = ultralytics.YOLO(str(cfg), task="detect")
    net = model.model
    rng = np.random.default_rng(seed)
    side = CALIBRATION_SIDE
    noise = rng.integers(0, 256, (2, side, side, 3), dtype=np.uint8)
    blurred = [cv2.GaussianBlur(n, (0, 0), sigma) for n, sigma in zip(noise, (2, 8), strict=True)]
    smooth = [cv2.normalize(b, np.empty_like(b), 0, 255, cv2.NORM_MINMAX) for b in blurred]
    pictures = [cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA) for img in images]
    frames = [*pictures, *(p[:, ::-1] for p in pictures), *noise, *smooth]
    batch = torch.from_numpy(np.stack(frames).astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()

    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: exact statistics from one batch
    net.train()
    with torch.no_grad():
        net(batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.eval()

    score_layers = [branch[-1] for branch in net.model[-1].cv3]
    logits: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: logits.append(out)) for layer in score_layers]
    with torch.no_grad():
        net(batch)
        for hook in hooks:
            hook.remove()
        for layer, logit in zip(score_layers, logits, strict=True):
            raw = logit - layer.bias.view(1, -1, 1, 1)
            gain = LOGIT_STD / float(raw.std().clamp_min(1e-6))
            layer.weight.mul_(gain)
            layer.bias.fill_(LOGIT_MEAN - gain * float(raw.mean()))
    net.names = {0: "face"}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return out
