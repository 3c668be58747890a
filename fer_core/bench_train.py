"""Speed of one classifier training step on this machine, by memory layout and precision.

    python -m fer_core.bench_train [--batch-size 64] [--steps 8] [--warmup 1] [--threads 2] [--stem-stride 1]
                                   [--json OUT]

Why it exists: on the 2-core AVX-512 CPU of this project, NHWC (`channels_last`) made an EfficientNet-B0 step
1.8x faster than NCHW at batch 64 (0.33 against 0.60 s), and bf16 autocast did not help on top of it. The epochs of
a real run moved the same way (290 -> 155 s), and these figures decide `TrainConfig.channels_last`'s default. Each
setting times forward, loss, backward and an AdamW step on a fixed random batch (48 px grayscale, 7 classes),
after `--warmup` untimed steps; the median over `--steps` steps is reported. Batch 64 is the default because its
figures match the real run's steps; at batch 256 a fresh process here took about 8 steps to fall from 3.8 to 1.3 s
(NHWC), and even after `--warmup 10` the medians stayed above the real run's (2.0 against 1.35 s).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import torch
from torch import nn

from fer_core import cli
from fer_core.models import ModelConfig, build_model

#: (label, channels_last, bf16 autocast): CPU autocast, since this times the CPU that trains without a GPU.
SETTINGS = (
    ("NCHW fp32", False, False),
    ("NHWC fp32", True, False),
    ("NCHW bf16", False, True),
    ("NHWC bf16", True, True),
)


def time_steps(
    config: ModelConfig, batch_size: int, steps: int, channels_last: bool, bf16: bool, warmup: int = 1
) -> list[float]:
    """Seconds of each timed training step (the untimed warm-up steps pay for allocation and kernel choice)."""
    torch.manual_seed(0)
    model = build_model(config)
    images = torch.randn(batch_size, config.in_channels, config.input_size, config.input_size)
    labels = torch.randint(0, config.num_classes, (batch_size,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(warmup + steps):
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - began)
    return seconds[warmup:]


def run(batch_size: int, steps: int, stem_stride: int, warmup: int = 1) -> list[dict[str, Any]]:
    config = ModelConfig(stem_stride=stem_stride)
    rows: list[dict[str, Any]] = []
    for label, channels_last, bf16 in SETTINGS:
        median = statistics.median(time_steps(config, batch_size, steps, channels_last, bf16, warmup))
        rows.append({"setting": label, "seconds_per_step": median, "images_per_second": batch_size / median})
    baseline = rows[0]["seconds_per_step"]
    for row in rows:
        row["speedup"] = baseline / row["seconds_per_step"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = cli.argument_parser("bench_train", __doc__)
    parser.add_argument("--batch-size", type=int, default=64, help="training images per timed step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as many as torch picks)")
    parser.add_argument(
        "--stem-stride", type=int, default=1, choices=[1, 2], help="stride of the first convolution, as train's"
    )
    parser.add_argument("--json", type=cli.out_file, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.threads < 0:
        parser.error("--steps and --batch-size must be at least 1, --warmup and --threads at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.batch_size, args.steps, args.stem_stride, args.warmup)
    print(
        f"EfficientNet-B0, stem stride {args.stem_stride}, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    print(f"{'setting':<10} {'s/step':>8} {'img/s':>8} {'speedup':>8}")
    for row in rows:
        seconds, rate, speedup = row["seconds_per_step"], row["images_per_second"], row["speedup"]
        print(f"{row['setting']:<10} {seconds:>8.3f} {rate:>8.1f} {speedup:>7.2f}x")
    if args.json:
        settings = {"batch_size": args.batch_size, "warmup": args.warmup, "threads": torch.get_num_threads()}
        cli.write_text_atomically(args.json, json.dumps({**settings, "rows": rows}, indent=1))


if __name__ == "__main__":
    cli.run(main)
