"""Fused digits workloads: K MLPs (or CNNs) of one shape trained as one computation.

The MLP's layers are batched matmuls over the trial dimension (``baddbmm``); the CNN's
convolutions are grouped convolutions with one group per trial, in a ``(B, K * C, H, W)``
layout that needs no transposes between layers. Both are what ``vmap`` would produce,
written out so that per-trial dropout and label smoothing are plain tensor columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from engine.workloads.common import OptimConfig, check_positive_int
from engine.workloads.digits import (
    NUM_CLASSES,
    build_cnn,
    build_mlp,
    cnn_model_hp,
    digits_data,
    mlp_model_hp,
)
from engine.workloads.fused_core import FusedTrainer
from engine.workloads.fused_parts import GroupSampler, TrialDropout, reinitialized

EVAL_EXAMPLES_PER_PASS = 32_768  # trials x validation examples per evaluation forward pass

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "silu": F.silu,
}


def per_trial_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, smoothing: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.cross_entropy(..., label_smoothing=s_k)`` of each trial: logits ``(K, B, C)``,
    labels ``(K, B)``, smoothing ``(K,)`` or None; returns ``(K,)``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(1)
    if smoothing is None:
        return nll
    smooth = -logp.sum(-1).mean(1) / logits.shape[-1]
    return (1 - smoothing) * nll + smoothing * smooth


class DigitsFused(FusedTrainer):
    """The fused digits trainer; ``kind`` is "mlp" or "cnn"."""

    metric_names = ("val_loss", "val_error")

    def __init__(self, hps: Sequence[Mapping[str, Any]], trials: Sequence[Any], kind: str):
        read, build = (mlp_model_hp, build_mlp) if kind == "mlp" else (cnn_model_hp, build_cnn)
        cfgs = [OptimConfig.from_hp(hp) for hp in hps]
        model_hps = [read(hp) for hp in hps]
        batch = shared([check_positive_int(hp, "batch_size") for hp in hps], "batch_size")
        for name in model_hps[0]:
            if name != "dropout":
                shared([m[name] for m in model_hps], name)
        shared([c.optimizer for c in cfgs], "optimizer")
        self.kind = kind
        self.activation = ACTIVATIONS[model_hps[0]["activation"]]
        modules, tensors = reinitialized(build, model_hps, [t.seed for t in trials], _structure)
        super().__init__(trials, modules, cfgs, tensors)
        seeds = [t.seed for t in trials]
        self.x_train, self.y_train, self.x_val, self.y_val = digits_data(self.device)
        self.sampler = GroupSampler(len(self.x_train), batch, seeds, self.device, self.max_train_steps)
        self.dropout = TrialDropout([m["dropout"] for m in model_hps], seeds, self.device)
        smoothing = [c.label_smoothing for c in cfgs]
        self.smoothing = torch.tensor(smoothing, device=self.device) if any(smoothing) else None

    # -- the model ---------------------------------------------------------------------
    def logits(self, x: torch.Tensor, step: int, train: bool) -> torch.Tensor:
        """``x`` is ``(K, B, 64)`` (each trial's batch) or ``(B, 64)`` (shared)."""
        if self.kind == "mlp":
            return self._mlp(x, step, train)
        return self._cnn(x, step, train)

    def _mlp(self, x: torch.Tensor, step: int, train: bool) -> torch.Tensor:
        leaves = self.params.leaves
        layers = len(leaves) // 2
        h = x if x.ndim == 3 else x.expand(leaves[0].shape[0], *x.shape)
        for i in range(layers):
            w, b = leaves[2 * i], leaves[2 * i + 1]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i < layers - 1:
                h = self.activation(h)
                if train:
                    h = self.dropout(h, step, i)
        return h

    def _cnn(self, x: torch.Tensor, step: int, train: bool) -> torch.Tensor:
        leaves = self.params.leaves
        k = leaves[0].shape[0]
        if x.ndim == 3:
            h = x.transpose(0, 1).reshape(x.shape[1], k, 8, 8)
        else:
            h = x.view(-1, 1, 8, 8).expand(-1, k, 8, 8)
        for i in range((len(leaves) - 2) // 2):
            w, b = leaves[2 * i], leaves[2 * i + 1]
            channels, c_in = w.shape[1], w.shape[2]
            weight = w.reshape(k * channels, c_in, 3, 3)
            h = F.conv2d(h, weight, b.reshape(-1), padding=1, groups=k)
            h = self.activation(h)
            if i < 3:
                h = F.max_pool2d(h, 2)
        h = h.mean(dim=(2, 3)).view(h.shape[0], k, -1).transpose(0, 1)  # (K, B, C)
        if train:
            h = self.dropout(h, step, 0)
        return torch.baddbmm(leaves[-1].unsqueeze(1), h, leaves[-2].transpose(1, 2))

    # -- FusedTrainer hooks ------------------------------------------------------------
    def loss(self, step: int) -> torch.Tensor:
        idx = self.sampler.indices(step)
        logits = self.logits(self.x_train[idx], step, train=True)
        return per_trial_cross_entropy(logits, self.y_train[idx], self.smoothing)

    def evaluate(self) -> torch.Tensor:
        k = self.params.flat.shape[0]
        chunk = max(1, min(len(self.x_val), EVAL_EXAMPLES_PER_PASS // k))
        loss_sum = torch.zeros(k, device=self.device)
        wrong = torch.zeros(k, device=self.device)
        for x, y in zip(self.x_val.split(chunk), self.y_val.split(chunk)):
            logits = self.logits(x, 0, train=False).float()
            logp = torch.log_softmax(logits, dim=-1)
            labels = y.expand(k, -1)
            loss_sum -= logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(1)
            wrong += (logits.argmax(-1) != labels).float().sum(1)
        return torch.stack([loss_sum, wrong], dim=1) / len(self.x_val)

    def close(self) -> None:
        self.sampler.close()

    def select(self, rows: torch.Tensor) -> None:
        super().select(rows)
        self.sampler.select(rows)
        on_device = rows.to(self.device)
        self.dropout.select(on_device)
        if self.smoothing is not None:
            self.smoothing = self.smoothing.index_select(0, on_device)


def _structure(model_hp: Mapping[str, Any]) -> str:
    """What decides a digits module's layers (a dropout layer exists or not, not its p)."""
    return repr(sorted({**model_hp, "dropout": float(model_hp["dropout"]) > 0}.items()))


def shared(values: Sequence[Any], name: str) -> Any:
    """The one value of a hyperparameter a fused group must share, else ValueError."""
    if any(v != values[0] for v in values):
        raise ValueError(
            f"hyperparameter {name}: a fused group needs one value, got {sorted(set(values))}"
        )
    return values[0]


def mlp_trial_bytes(hp: Mapping[str, Any]) -> tuple[int, int]:
    """(device bytes per trial, per group) of a fused digits-mlp, on the safe side."""
    width, depth, batch = int(hp["width"]), int(hp["depth"]), int(hp["batch_size"])
    fan_in = [64] + [width] * depth
    params = sum(f * o + o for f, o in zip(fan_in, [width] * depth + [NUM_CLASSES]))
    per_example = (64 + depth * width * 4 + NUM_CLASSES * 6) * 4
    return params * 4 * 9 + batch * per_example * 2, EVAL_EXAMPLES_PER_PASS * per_example


def cnn_trial_bytes(hp: Mapping[str, Any]) -> tuple[int, int]:
    """(device bytes per trial, per group) of a fused digits-cnn, on the safe side."""
    channels, depth, batch = int(hp["channels"]), int(hp["depth"]), int(hp["batch_size"])
    params = 10 * channels + (depth - 1) * (9 * channels * channels + channels)
    params += NUM_CLASSES * channels + NUM_CLASSES
    pixels = sum(64 // 4 ** min(i, 3) for i in range(depth))
    per_example = (64 + channels * pixels * 4 + NUM_CLASSES * 6) * 4
    return params * 4 * 9 + batch * per_example * 3, EVAL_EXAMPLES_PER_PASS * per_example


def train_mlp_fused(hps: Sequence[Mapping[str, Any]], trials: Sequence[Any]) -> None:
    """builtin:digits-mlp for K trials at once (see :mod:`engine.workloads.fused`)."""
    DigitsFused(hps, trials, "mlp").run()


def train_cnn_fused(hps: Sequence[Mapping[str, Any]], trials: Sequence[Any]) -> None:
    """builtin:digits-cnn for K trials at once (see :mod:`engine.workloads.fused`)."""
    DigitsFused(hps, trials, "cnn").run()
