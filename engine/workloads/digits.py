"""The digits workloads: an MLP and a small CNN on scikit-learn's bundled 8x8 digits.

The data ship with scikit-learn (no download). The split is fixed (1,397 train / 400
validation, split seed 0) and standardized with the training set's per-pixel statistics.
Tensors are cached at module level, so a warm worker process loads them once per device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.workloads.builtin import ACTIVATIONS, DIGITS_TRAIN_SIZE, DIGITS_VAL_SIZE
from engine.workloads.common import (
    EpochSampler,
    OptimConfig,
    build_optimizer,
    check_choice,
    check_positive_int,
    make_activation,
    read_dropout,
    run_training,
)

SPLIT_SEED = 0
NUM_CLASSES = 10

# (x_train, y_train, x_val, y_val) per device string.
_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _load_cpu() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(SPLIT_SEED).permutation(len(x))
    train, val = order[:DIGITS_TRAIN_SIZE], order[DIGITS_TRAIN_SIZE:]
    assert len(val) == DIGITS_VAL_SIZE
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant border pixels
    x = ((x - mean) / std).astype(np.float32)
    return (
        torch.from_numpy(x[train]),
        torch.from_numpy(y[train]).long(),
        torch.from_numpy(x[val]),
        torch.from_numpy(y[val]).long(),
    )


def digits_data(
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_val, y_val)`` on ``device``; x has shape (n, 64)."""
    if "cpu" not in _CACHE:
        _CACHE["cpu"] = _load_cpu()
    if device not in _CACHE:
        _CACHE[device] = tuple(t.to(device) for t in _CACHE["cpu"])  # type: ignore[assignment]
    return _CACHE[device]


def build_mlp(width: int, depth: int, activation: str, dropout: float) -> nn.Module:
    """``depth`` hidden layers of ``width`` units (depth 0 = multinomial logistic)."""
    layers: list[nn.Module] = []
    fan_in = 64
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), make_activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, NUM_CLASSES))
    return nn.Sequential(*layers)


def build_cnn(channels: int, depth: int, activation: str, dropout: float) -> nn.Module:
    """``depth`` 3x3 conv layers (2x2 max-pool after each of the first three), global
    average pooling, dropout, and a linear classifier. Input: flat (n, 64) images."""
    layers: list[nn.Module] = [nn.Unflatten(1, (1, 8, 8))]
    c_in = 1
    for i in range(depth):
        layers += [nn.Conv2d(c_in, channels, 3, padding=1), make_activation(activation)]
        if i < 3:  # 8 -> 4 -> 2 -> 1
            layers.append(nn.MaxPool2d(2))
        c_in = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(channels, NUM_CLASSES))
    return nn.Sequential(*layers)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``val_loss`` (plain cross-entropy) and ``val_error`` (1 - accuracy)."""
    loss = F.cross_entropy(logits.float(), labels)
    error = (logits.argmax(dim=1) != labels).float().mean()
    both = torch.stack([loss, error]).tolist()  # one host sync for both
    return {"val_loss": both[0], "val_error": both[1]}


def _train_classifier(
    model_hp: Mapping[str, Any], build: Callable[..., nn.Module], hp: Mapping[str, Any], trial: Any
) -> None:
    """Train ``build(**model_hp)`` on digits with the shared loop."""
    cfg = OptimConfig.from_hp(hp)
    batch_size = check_positive_int(hp, "batch_size")
    device = str(trial.device)
    x_train, y_train, x_val, y_val = digits_data(device)
    torch.manual_seed(trial.seed)
    model = build(**model_hp).to(device)
    optimizer = build_optimizer(model, cfg)
    sampler = EpochSampler(len(x_train), batch_size, trial.seed, device)

    def loss_at(step: int) -> torch.Tensor:
        idx = sampler.indices(step)
        return F.cross_entropy(
            model(x_train[idx]), y_train[idx], label_smoothing=cfg.label_smoothing
        )

    def evaluate() -> dict[str, float]:
        return classification_metrics(model(x_val), y_val)

    run_training(trial, model, optimizer, cfg, loss_at, evaluate)


def mlp_model_hp(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The validated :func:`build_mlp` arguments of a digits-mlp config."""
    return {
        "width": check_positive_int(hp, "width"),
        "depth": check_positive_int(hp, "depth", low=0),
        "activation": check_choice(hp, "activation", ACTIVATIONS),
        "dropout": read_dropout(hp),
    }


def cnn_model_hp(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The validated :func:`build_cnn` arguments of a digits-cnn config."""
    return {
        "channels": check_positive_int(hp, "channels"),
        "depth": check_positive_int(hp, "depth"),
        "activation": check_choice(hp, "activation", ACTIVATIONS),
        "dropout": read_dropout(hp),
    }


def train_mlp(hp: Mapping[str, Any], trial: Any) -> None:
    """builtin:digits-mlp: train an MLP on the digits and report train_loss, val_loss,
    val_error at every evaluation point."""
    _train_classifier(mlp_model_hp(hp), build_mlp, hp, trial)


def train_cnn(hp: Mapping[str, Any], trial: Any) -> None:
    """builtin:digits-cnn: train a small CNN on the digits and report train_loss, val_loss,
    val_error at every evaluation point."""
    _train_classifier(cnn_model_hp(hp), build_cnn, hp, trial)
