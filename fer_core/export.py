"""Export classifiers to ONNX (softmax inside) and keep the exported files in a content-keyed cache.

    python -m fer_core.export --weights weights --out weights/onnx

At run time `classifier_onnx_path` builds the ONNX file on first use, named by the sha256 of the
checkpoint, so a changed checkpoint can never be paired with a stale graph.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_core.checkpoint import LoadedClassifier, load_classifier
from fer_core.models import ModelConfig

#: Largest allowed |p_onnx - p_torch| on the same inputs.
MAX_PROB_DIFF = 1e-4


def cache_dir() -> Path:
    """`$FER_CACHE_DIR`, else ~/.cache/fer_core (never inside the repository)."""
    return Path(os.environ.get("FER_CACHE_DIR", Path.home() / ".cache" / "fer_core"))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def export_classifier(loaded: LoadedClassifier, out_path: str | Path) -> Path:
    """Write an ONNX graph (dynamic batch, normalised float input, probabilities out) and verify it."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = loaded.config
    wrapped = _WithSoftmax(loaded.model.cpu().eval())
    dummy = torch.zeros(2, config.in_channels, config.input_size, config.input_size)
    tmp = out.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (dummy,),
            str(tmp),
            input_names=["input"],
            output_names=["probs"],
            dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    diff = max_prob_difference(loaded, tmp, config)
    if diff > MAX_PROB_DIFF:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX export of {loaded.path} differs from PyTorch by {diff:.2e} > {MAX_PROB_DIFF}")
    tmp.replace(out)
    return out


def max_prob_difference(loaded: LoadedClassifier, onnx_path: str | Path, config: ModelConfig, n: int = 16) -> float:
    """Largest probability difference between PyTorch and onnxruntime on seeded random faces."""
    from fer_core.classifier import OnnxRuntime, TorchRuntime

    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(n, config.in_channels, config.input_size, config.input_size), dtype=np.uint8)
    torch_probs = TorchRuntime(loaded, "cpu")(batch)
    onnx_probs = OnnxRuntime(onnx_path, config)(batch)
    return float(np.abs(torch_probs - onnx_probs).max())


def classifier_onnx_path(loaded: LoadedClassifier) -> Path:
    """The cached ONNX file for this exact checkpoint, exporting it on first use."""
    target = cache_dir() / "onnx" / f"{loaded.path.stem}-{file_sha256(loaded.path)[:16]}.onnx"
    if not target.exists():
        export_classifier(loaded, target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_core.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=Path("weights"), help="folder with ensemble.json and the .pt files")
    parser.add_argument("--out", type=Path, default=None, help="where to write .onnx files (default: the cache)")
    args = parser.parse_args(argv)
    spec = json.loads((args.weights / "ensemble.json").read_text())
    report = {}
    for member in spec["models"]:
        loaded = load_classifier(args.weights / member["file"])
        target = (args.out / f"{Path(member['file']).stem}.onnx") if args.out else classifier_onnx_path(loaded)
        if args.out:
            export_classifier(loaded, target)
        report[loaded.name] = {"onnx": str(target), "max_prob_diff": max_prob_difference(loaded, target, loaded.config)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
