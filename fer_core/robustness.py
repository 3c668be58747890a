"""How accuracy holds up when test faces are degraded, and what holding back unsure predictions buys.

    python -m fer_core.robustness --data ../shared/data/fer2013 --out reports/robustness [--limit 1000]

PrivateTest accuracy of every classifier and the ensemble, clean and under seven perturbations at three
strengths each (brightness, contrast, blur, JPEG, rotation, occlusion, low resolution): the conditions a
webcam or a phone video actually produces. Writes DIR/robustness.csv and .json, a plot DIR/robustness.png,
and DIR/confidence.csv: accuracy per confidence bucket, and coverage and accuracy on the kept predictions
when predictions below a threshold are held back (abstention). Prints markdown tables for the model card.

Perturbations work on whole uint8 (N, H, W) batches at once and are deterministic given `--seed`: each
(perturbation, strength) draws from its own generator seeded by (seed, name, strength), so a result does
not depend on which other conditions ran.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from fer_core import cli
from fer_core.data import FerSplit, load_fer2013
from fer_core.ensemble import ENSEMBLE_KEY, Ensemble
from fer_core.evaluate import predict_split
from fer_core.labels import TEST_SPLIT
from fer_core.pipeline import DEFAULT_WEIGHTS

PerturbFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
CLEAN = "clean"
#: Confidence thresholds (and lower bucket edges) of the abstention analysis.
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))
#: Conditions are perturbed and classified together up to this many images: few model calls for small test
#: sets, while on PrivateTest (3,589 faces x 22 conditions) at most ~40 MB of perturbed copies exist at once.
GROUP_IMAGES = 16_384
#: cv2.resize handles at most this many channels: batches are resized in chunks of it.
_CV_MAX_CHANNELS = 512


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _random_signs(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0], np.float32), size=n)


def brightness(images: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """Add +delta or -delta grey levels (random sign per image): over- and under-exposure."""
    shift = _random_signs(len(images), rng) * np.float32(delta)
    return _to_uint8(images.astype(np.float32) + shift[:, None, None])


def contrast(images: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Scale each image's deviations from its own mean by `factor` (< 1: flat, hazy light)."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8(mean + np.float32(factor) * (x - mean))


def blur(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with standard deviation `sigma` pixels (defocus, motion at low shutter speed)."""
    return _to_uint8(gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma), mode="nearest"))


def jpeg(images: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Encode and decode as JPEG at `quality` (streaming, messaging apps).

    Grey JPEG works on independent 8x8 blocks, so when the sides are multiples of 8 the batch is tiled into
    one mosaic and coded once: the same pixels as coding each face alone, hundreds of times faster.
    """
    n, h, w = images.shape
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]

    def code(gray: np.ndarray) -> np.ndarray:
        ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(gray), params)
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        decoded = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
        if decoded is None:
            raise RuntimeError("JPEG decoding failed")
        return decoded

    if n == 0:
        return images.copy()
    if h % 8 or w % 8:
        return np.stack([code(image) for image in images])
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    tiles = np.zeros((rows * cols, h, w), np.uint8)
    tiles[:n] = images
    mosaic = tiles.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    decoded = code(mosaic).reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(rows * cols, h, w)
    return np.ascontiguousarray(decoded[:n])


def bilinear_sample(images: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """images[n] sampled at (ys[n], xs[n]) with bilinear interpolation; outside points take the nearest edge."""
    n, h, w = images.shape
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.minimum(np.floor(ys).astype(np.intp), h - 2 if h > 1 else 0)
    x0 = np.minimum(np.floor(xs).astype(np.intp), w - 2 if w > 1 else 0)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0).astype(np.float32), (xs - x0).astype(np.float32)
    idx = np.arange(n)[:, None, None]
    x = images.astype(np.float32)
    top = x[idx, y0, x0] * (1 - wx) + x[idx, y0, x1] * wx
    bottom = x[idx, y1, x0] * (1 - wx) + x[idx, y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def rotation(images: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate by +degrees or -degrees about the centre (random sign per image): tilted heads."""
    n, h, w = images.shape
    theta = np.deg2rad(_random_signs(n, rng) * np.float32(degrees))[:, None, None]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy[None] - cy, xx[None] - cx
    # inverse map: the source pixel that lands on each output pixel
    src_x = cx + np.cos(theta) * dx - np.sin(theta) * dy
    src_y = cy + np.sin(theta) * dx + np.cos(theta) * dy
    return _to_uint8(bilinear_sample(images, src_y, src_x))


def occlusion(images: np.ndarray, area: float, rng: np.random.Generator) -> np.ndarray:
    """Random erasing: a square covering `area` of the face, at a random place, filled with noise (hands, mask)."""
    n, h, w = images.shape
    side = max(1, round(np.sqrt(area * h * w)))
    side_y, side_x = min(side, h), min(side, w)
    top = rng.integers(0, h - side_y + 1, size=n)[:, None, None]
    left = rng.integers(0, w - side_x + 1, size=n)[:, None, None]
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    mask = (rows >= top) & (rows < top + side_y) & (cols >= left) & (cols < left + side_x)
    noise = rng.integers(0, 256, size=images.shape, dtype=np.uint8)
    return np.where(mask, noise, images)


def _resize_batch(images: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """cv2.resize of a whole (N, H, W) batch, stacked as channels (at most 512 per call)."""
    chunks = []
    for start in range(0, len(images), _CV_MAX_CHANNELS):
        stacked = np.ascontiguousarray(images[start : start + _CV_MAX_CHANNELS].transpose(1, 2, 0))
        out = cv2.resize(stacked, size, interpolation=interpolation)
        chunks.append(out.reshape(size[1], size[0], -1).transpose(2, 0, 1))
    return np.ascontiguousarray(np.concatenate(chunks)) if chunks else images.copy()


def downscale(images: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Shrink by `factor` (area) and enlarge back (bilinear), as a small, distant face is by the pipeline."""
    _, h, w = images.shape
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    return _resize_batch(_resize_batch(images, small, cv2.INTER_AREA), (w, h), cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Perturbation:
    """A named degradation, its three strengths (mild to severe) and how to print one."""

    name: str
    apply: PerturbFn
    levels: tuple[float, float, float]
    fmt: str
    random: bool

    def setting(self, strength: float) -> str:
        return self.fmt.format(strength)


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("brightness", brightness, (25, 50, 75), "+/-{:g} levels", True),
        Perturbation("contrast", contrast, (0.7, 0.5, 0.3), "x{:g}", False),
        Perturbation("blur", blur, (0.8, 1.5, 2.5), "sigma {:g} px", False),
        Perturbation("jpeg", jpeg, (40, 20, 8), "quality {:g}", False),
        Perturbation("rotation", rotation, (10, 20, 30), "+/-{:g} deg", True),
        Perturbation("occlusion", occlusion, (0.1, 0.2, 0.35), "{:.0%} erased", True),
        Perturbation("downscale", downscale, (2, 3, 4), "1/{:g} resolution", False),
    )
}


def condition_rng(seed: int, name: str, strength: float) -> np.random.Generator:
    """The generator of one (perturbation, strength): stable across runs, processes and condition order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), round(strength * 1000)])


def perturb(images: np.ndarray, name: str, strength: float, seed: int = 0) -> np.ndarray:
    """Apply perturbation `name` at `strength` to a uint8 (N, H, W) batch; a new array of the same shape."""
    batch = np.asarray(images)
    if batch.ndim != 3 or batch.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (N, H, W) batch, got {batch.dtype} {batch.shape}")
    if name == CLEAN:
        return batch.copy()
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; have {[CLEAN, *PERTURBATIONS]}")
    return PERTURBATIONS[name].apply(batch, float(strength), condition_rng(seed, name, strength))


def conditions() -> list[tuple[str, int, float, str]]:
    """(perturbation, level 0..3, strength, setting) for clean and every perturbation strength."""
    rows = [(CLEAN, 0, 0.0, "none")]
    for p in PERTURBATIONS.values():
        rows += [(p.name, level, float(s), p.setting(s)) for level, s in enumerate(p.levels, start=1)]
    return rows


def accuracy_table(
    ensemble: Ensemble, split: FerSplit, seed: int = 0, batch_size: int = 512, progress: bool = True
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Accuracy of each model per condition (long format) and the clean probabilities."""
    rows: list[dict[str, Any]] = []
    clean_probs: dict[str, np.ndarray] = {}
    todo, n = conditions(), len(split)
    per_group = max(1, GROUP_IMAGES // max(n, 1))
    with tqdm(total=len(todo), desc="robustness", disable=not progress) as bar:
        for start in range(0, len(todo), per_group):
            group = todo[start : start + per_group]
            images = np.concatenate([perturb(split.images, name, strength, seed) for name, _, strength, _ in group])
            labels = np.tile(split.labels, len(group))
            probs = predict_split(ensemble, FerSplit(split.name, images, labels, ()), batch_size, False)
            for i, (name, level, strength, setting) in enumerate(group):
                part = {model: p[i * n : (i + 1) * n] for model, p in probs.items()}
                if name == CLEAN:
                    clean_probs = part
                for model, p in part.items():
                    accuracy = float((p.argmax(1) == split.labels).mean()) if n else float("nan")
                    rows.append(
                        {
                            "perturbation": name,
                            "level": level,
                            "strength": strength,
                            "setting": setting,
                            "model": model,
                            "accuracy": accuracy,
                            "n": n,
                        }
                    )
            bar.update(len(group))
    table = pd.DataFrame(rows)
    clean = table[table["perturbation"] == CLEAN].set_index("model")["accuracy"]
    table["drop"] = table["model"].map(clean) - table["accuracy"]
    return table, clean_probs


def confidence_table(probs: dict[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """Per model and threshold t in 0.0..0.9: the [t, t+0.1) bucket's size and accuracy, and, if predictions
    below t are held back, the coverage, the abstention rate and the accuracy on what is kept."""
    rows = []
    for model, p in probs.items():
        confidence = p.max(1)
        correct = p.argmax(1) == labels
        for t in THRESHOLDS:
            upper = t + 0.1 if t < THRESHOLDS[-1] else np.inf
            bucket = (confidence >= t) & (confidence < upper)
            kept = confidence >= t
            rows.append(
                {
                    "model": model,
                    "threshold": t,
                    "bucket": f"{t:.1f}-{min(t + 0.1, 1.0):.1f}",
                    "bucket_n": int(bucket.sum()),
                    "bucket_accuracy": float(correct[bucket].mean()) if bucket.any() else float("nan"),
                    "bucket_mean_confidence": float(confidence[bucket].mean()) if bucket.any() else float("nan"),
                    "coverage": float(kept.mean()) if len(labels) else float("nan"),
                    "abstention_rate": float(1 - kept.mean()) if len(labels) else float("nan"),
                    "accuracy_kept": float(correct[kept].mean()) if kept.any() else float("nan"),
                    "n_kept": int(kept.sum()),
                }
            )
    return pd.DataFrame(rows)


def model_order(table: pd.DataFrame) -> list[str]:
    """Members in their ensemble order, then the ensemble: the order of the columns and legends."""
    names = list(dict.fromkeys(table["model"]))
    return [n for n in names if n != ENSEMBLE_KEY] + [n for n in names if n == ENSEMBLE_KEY]


def _pct(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.1f}%"


def robustness_markdown(table: pd.DataFrame) -> str:
    """Perturbation x model accuracy table; perturbed cells also show the change from clean in points."""
    models = model_order(table)
    wide = table.pivot_table(index=["level", "perturbation", "setting"], columns="model", values="accuracy")
    clean = table[table["perturbation"] == CLEAN].set_index("model")["accuracy"]
    lines = ["| Perturbation | Setting | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    order = [CLEAN, *PERTURBATIONS]
    keys = sorted(wide.index, key=lambda k: (order.index(k[1]), k[0]))
    for level, name, setting in keys:
        cells = []
        for model in models:
            acc = float(wide.loc[(level, name, setting), model])
            cells.append(_pct(acc) if name == CLEAN else f"{_pct(acc)} ({100 * (acc - clean[model]):+.1f})")
        lines.append(f"| {name} | {setting} | " + " | ".join(cells) + " |")
    perturbed = table[table["perturbation"] != CLEAN].groupby("model")["accuracy"].mean()
    mean_cells = [f"{_pct(perturbed[m])} ({100 * (perturbed[m] - clean[m]):+.1f})" for m in models]
    n_conditions = table.loc[table["perturbation"] != CLEAN, ["perturbation", "level"]].drop_duplicates().shape[0]
    lines.append(f"| **mean of perturbed** | all {n_conditions} | " + " | ".join(mean_cells) + " |")
    return "\n".join(lines)


def confidence_markdown(conf: pd.DataFrame, model: str = ENSEMBLE_KEY) -> str:
    """Abstention table for one model: what each confidence threshold keeps and how accurate that is."""
    lines = [
        f"| Threshold ({model}) | Coverage | Abstained | Accuracy on kept | Bucket | Bucket n | Bucket accuracy |",
        "|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in conf[conf["model"] == model].itertuples():
        cells = [
            f"{row.threshold:.1f}",
            _pct(row.coverage),
            _pct(row.abstention_rate),
            _pct(row.accuracy_kept),
            row.bucket,
            str(row.bucket_n),
            _pct(row.bucket_accuracy),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_plot(table: pd.DataFrame, conf: pd.DataFrame, path: Path) -> None:
    """One panel per perturbation (accuracy vs strength, clean at the left) and the coverage/accuracy curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = model_order(table)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    clean = table[table["perturbation"] == CLEAN].set_index("model")["accuracy"]
    low, high = float(table["accuracy"].min()), float(table["accuracy"].max())
    margin = max(0.02, 0.05 * (high - low))
    for ax, p in zip(axes.flat, PERTURBATIONS.values(), strict=False):
        part = table[table["perturbation"] == p.name]
        for model in models:
            acc = [clean[model], *part[part["model"] == model].sort_values("level")["accuracy"]]
            ax.plot(range(4), acc, marker="o", label=model, **_line_style(model))
        ax.set_xticks(range(4), ["clean", *(p.setting(s) for s in p.levels)], rotation=20, fontsize=8)
        ax.set_ylim(low - margin, high + margin)  # one scale for all panels: drops compare at a glance
        ax.set_title(p.name)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    ax = axes.flat[-1]
    for model in models:
        part = conf[conf["model"] == model]
        ax.plot(part["coverage"], part["accuracy_kept"], marker=".", label=model, **_line_style(model))
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("coverage (share of faces answered)")
    ax.set_ylabel("accuracy on answered")
    ax.set_title("abstaining below a confidence threshold")
    ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(models), fontsize=9)
    fig.suptitle(f"Accuracy under perturbations ({table['n'].iloc[0]} {TEST_SPLIT} faces)")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _line_style(model: str) -> dict[str, Any]:
    return {"linewidth": 2.5, "color": "black"} if model == ENSEMBLE_KEY else {"linewidth": 1.2}


#: The files `write_outputs` writes into --out.
OUTPUT_NAMES = ("robustness.csv", "confidence.csv", "robustness.json", "robustness.png")


def write_outputs(table: pd.DataFrame, conf: pd.DataFrame, out: Path, meta: dict[str, Any]) -> None:
    """Each file whole or not at all (a full disk left half a JSON beside the last run's plot)."""
    cli.write_output(out / "robustness.csv", lambda partial: table.to_csv(partial, index=False))
    cli.write_output(out / "confidence.csv", lambda partial: conf.to_csv(partial, index=False))
    accuracy: dict[str, dict[str, Any]] = {}
    for row in table.itertuples():
        entry = accuracy.setdefault(row.model, {})
        if row.perturbation == CLEAN:
            entry[CLEAN] = row.accuracy
        else:
            entry.setdefault(row.perturbation, []).append(row.accuracy)
    report = {
        **meta,
        "perturbations": {
            p.name: {"strengths": list(p.levels), "settings": [p.setting(s) for s in p.levels]}
            for p in PERTURBATIONS.values()
        },
        "accuracy": accuracy,
        "confidence": json.loads(conf.to_json(orient="records")),
    }
    cli.write_text_atomically(out / "robustness.json", json.dumps(report, indent=2) + "\n")
    cli.write_output(out / "robustness.png", lambda partial: save_plot(table, conf, partial))


def main(argv: list[str] | None = None) -> None:
    parser = cli.argument_parser("robustness", __doc__)
    parser.add_argument("--data", required=True, help="FER-2013 folder or CSV")
    parser.add_argument("--out", type=cli.out_folder, required=True, help=f"folder for {', '.join(OUTPUT_NAMES)}")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="folder with ensemble.json")
    cli.add_runtime_option(parser)
    parser.add_argument("--seed", type=cli.seed, default=0, help="seeds the random perturbations and --limit")
    parser.add_argument("--limit", type=int, default=0, help="use a seeded random subset of N test faces (0: all)")
    parser.add_argument("--batch-size", type=int, default=512, help="faces per classifier call")
    cli.add_skip_bad_option(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.limit < 0:
        parser.error("--batch-size must be at least 1, --limit at least 0")
    cli.prepare_out_folder(args.out, OUTPUT_NAMES)  # found only after all the work, the other files written
    dataset = load_fer2013(args.data, skip_bad=args.skip_bad)
    split = dataset[TEST_SPLIT]
    if 0 < args.limit < len(split):
        split = split.subset(np.sort(np.random.default_rng(args.seed).permutation(len(split))[: args.limit]))
    ensemble = Ensemble.load(args.weights, runtime=args.runtime)
    table, clean_probs = accuracy_table(ensemble, split, args.seed, args.batch_size)
    conf = confidence_table(clean_probs, split.labels)
    meta = {
        "split": TEST_SPLIT,
        "n": len(split),
        "seed": args.seed,
        "models": list(clean_probs),
        "skipped": dataset.skipped_count,  # --skip-bad: rows/files of the source left out (all splits), as evaluate
    }
    write_outputs(table, conf, args.out, meta)
    print(f"## Robustness ({len(split)} {TEST_SPLIT} faces, seed {args.seed})\n")
    print(robustness_markdown(table))
    print("\n## Confidence and abstention (clean)\n")
    print(confidence_markdown(conf))
    print(f"\nwrote {args.out / 'robustness.csv'}, robustness.json, robustness.png, confidence.csv")


if __name__ == "__main__":
    cli.run(main)
