"""Classifier architectures, built by name from a small registry (no pretrained weights exist here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torchvision.models import efficientnet_b0

from fer_core.labels import EMOTIONS, FER_SIZE


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a classifier and feed it: stored inside every checkpoint.

    `stem_stride=1` keeps B0's stride-32 trunk from collapsing a 48 px face to a 2x2 map: it gives
    the feature maps of a 96 px upsampled input while skipping the upsampling.
    """

    arch: str = "efficientnet_b0"
    num_classes: int = len(EMOTIONS)
    in_channels: int = 1
    input_size: int = FER_SIZE
    stem_stride: int = 1
    dropout: float = 0.3
    stochastic_depth: float = 0.1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    class_names: tuple[str, ...] = field(default=EMOTIONS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std", "class_names"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


MODEL_REGISTRY: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[[ModelConfig], nn.Module]], Callable]:
    def decorator(builder: Callable[[ModelConfig], nn.Module]) -> Callable:
        MODEL_REGISTRY[name] = builder
        return builder

    return decorator


def build_model(config: ModelConfig) -> nn.Module:
    """Build an untrained classifier for `config` (raises KeyError naming the known archs)."""
    if config.arch not in MODEL_REGISTRY:
        raise KeyError(f"unknown arch {config.arch!r}; known: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[config.arch](config)


@register_model("efficientnet_b0")
def _efficientnet_b0(config: ModelConfig) -> nn.Module:
    model = efficientnet_b0(
        weights=None,
        num_classes=config.num_classes,
        dropout=config.dropout,
        stochastic_depth_prob=config.stochastic_depth,
    )
    stem = model.features[0][0]
    model.features[0][0] = nn.Conv2d(
        config.in_channels,
        stem.out_channels,
        kernel_size=stem.kernel_size,
        stride=config.stem_stride,
        padding=stem.padding,
        bias=False,
    )
    nn.init.kaiming_normal_(model.features[0][0].weight, mode="fan_out")
    _zero_init_head(model.classifier[-1])
    return model


def _zero_init_head(linear: nn.Linear) -> None:
    """torchvision's uniform(+-1/sqrt(7)) head starts at loss ~3.8; zeros start at ln 7."""
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)


def normalise(batch_uint8: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """uint8 (N, C, H, W) on any device to the float input the network was trained on."""
    mean = torch.tensor(config.mean, device=batch_uint8.device).view(1, -1, 1, 1)
    std = torch.tensor(config.std, device=batch_uint8.device).view(1, -1, 1, 1)
    return (batch_uint8.float() / 255.0 - mean) / std
