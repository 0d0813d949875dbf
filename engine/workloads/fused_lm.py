"""Fused builtin:tiny-lm: K byte-level Transformers of one shape trained as one computation.

The forward pass is :class:`~engine.workloads.lm.ByteTransformer`'s, written over stacked
weights: every linear layer is one ``baddbmm`` over the trial dimension, attention folds the
trials into the batch of one ``scaled_dot_product_attention`` call (flash attention on a GPU,
where ``vmap`` would fall back to a loop). As in the unfused path, CUDA runs under bf16
autocast and the CPU in float32.

Dropout: the embedding, residual and MLP dropouts use :class:`TrialDropout` (each trial's own
stream); attention dropout is SDPA's, one probability per group (``dropout`` is in the
tiny-lm's fuse key) drawn from the global RNG, reseeded from the group's seeds and the step
after every evaluation, so its masks depend on the group's composition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from engine.workloads.common import OptimConfig, check_positive_int, mix_seed, seed_cpu
from engine.workloads.fused_core import FusedTrainer
from engine.workloads.fused_digits import ACTIVATIONS, per_trial_cross_entropy, shared
from engine.workloads.fused_parts import GroupSampler, TrialDropout
from engine.workloads.lm import EVAL_BATCH_TOKENS, VOCAB, build_lm, lm_data, val_starts

EVAL_TOKENS_PER_PASS = 1 << 20  # trials x validation tokens per evaluation forward pass
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "seq_len", "tie_embeddings", "activation")


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Per-trial ``F.linear``: x ``(K, ..., in)``, w ``(K, out, in)``, b ``(K, out)``."""
    k, shape = x.shape[0], x.shape[:-1]
    flat = x.reshape(k, -1, x.shape[-1])
    wt = w.transpose(1, 2)
    out = torch.bmm(flat, wt) if b is None else torch.baddbmm(b.unsqueeze(1), flat, wt)
    return out.view(*shape, w.shape[1])


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    view = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:]) * w.view(view) + b.view(view)


class LMFused(FusedTrainer):
    """The fused tiny-lm trainer."""

    metric_names = ("val_loss", "val_error", "val_bpb")

    def __init__(self, hps: Sequence[Mapping[str, Any]], trials: Sequence[Any]) -> None:
        cfgs = [OptimConfig.from_hp(hp) for hp in hps]
        batch = shared([check_positive_int(hp, "batch_size") for hp in hps], "batch_size")
        modules = []
        for hp, trial in zip(hps, trials):
            seed_cpu(trial.seed)  # built on the CPU, as the unfused path builds it
            modules.append(build_lm(hp))  # validates the architecture hyperparameters
        for name in SHAPE_KEYS:
            shared([hp[name] for hp in hps], name)
        shared([c.optimizer for c in cfgs], "optimizer")
        probabilities = [float(hp["dropout"]) for hp in hps]
        self.attention_dropout = shared(probabilities, "dropout")
        first = modules[0]
        self.n_layers = len(first.blocks)
        self.n_heads = int(check_positive_int(hps[0], "n_heads"))
        self.seq_len, self.batch_size = first.pos.num_embeddings, batch
        self.tied = first.head.weight is first.tok.weight
        self.names = [name for name, _ in first.named_parameters()]
        self.activation = ACTIVATIONS[hps[0]["activation"]]
        super().__init__(trials, modules, cfgs)
        del modules
        self.seeds = [t.seed for t in trials]
        self.train_data, self.val_data = lm_data(self.device)
        n_windows = (len(self.train_data) - 1) // self.seq_len
        self.sampler = GroupSampler(n_windows, batch, self.seeds, self.device, self.max_train_steps)
        self.dropout = TrialDropout(probabilities, self.seeds, self.device)
        smoothing = [c.label_smoothing for c in cfgs]
        self.smoothing = torch.tensor(smoothing, device=self.device) if any(smoothing) else None
        self.offsets = torch.arange(self.seq_len + 1, device=self.device)

    # -- the model ---------------------------------------------------------------------
    def logits(self, idx: torch.Tensor, step: int, train: bool) -> torch.Tensor:
        """``idx`` ``(K, B, T)`` bytes -> logits ``(K, B, T, 256)``."""
        p = dict(zip(self.names, self.params.leaves))
        k, t = idx.shape[0], idx.shape[2]
        trial = torch.arange(k, device=idx.device)[:, None, None]
        h = p["tok.weight"][trial, idx] + p["pos.weight"][:, None, :t, :]
        h = self._drop(h, step, 0, train)
        for i in range(self.n_layers):
            h = self._block(p, f"blocks.{i}.", h, step, i, train)
        h = _layer_norm(h, p["ln_f.weight"], p["ln_f.bias"])
        head = p["tok.weight"] if self.tied else p["head.weight"]
        return _linear(h, head, None)

    def _block(
        self,
        p: dict[str, torch.Tensor],
        pre: str,
        x: torch.Tensor,
        step: int,
        i: int,
        train: bool,
    ) -> torch.Tensor:
        k, b, t, d = x.shape
        a = _layer_norm(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"])
        qkv = _linear(a, p[pre + "qkv.weight"], p[pre + "qkv.bias"])
        q, key, v = qkv.view(k * b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            key.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            dropout_p=self.attention_dropout if train else 0.0,
        )
        y = y.transpose(1, 2).reshape(k, b, t, d)
        x = x + self._drop(
            _linear(y, p[pre + "proj.weight"], p[pre + "proj.bias"]), step, 2 * i + 1, train
        )
        m = _layer_norm(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"])
        m = self.activation(_linear(m, p[pre + "mlp.0.weight"], p[pre + "mlp.0.bias"]))
        m = _linear(m, p[pre + "mlp.2.weight"], p[pre + "mlp.2.bias"])
        return x + self._drop(m, step, 2 * i + 2, train)

    def _drop(self, h: torch.Tensor, step: int, layer: int, train: bool) -> torch.Tensor:
        return self.dropout(h, step, layer) if train else h

    def _autocast(self) -> torch.autocast:
        on_cuda = self.device.startswith("cuda")
        return torch.autocast("cuda" if on_cuda else "cpu", dtype=torch.bfloat16, enabled=on_cuda)

    def _windows(self, data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        chunk = data[starts.unsqueeze(-1) + self.offsets].long()
        return chunk[..., :-1], chunk[..., 1:]

    # -- FusedTrainer hooks ------------------------------------------------------------
    def loss(self, step: int) -> torch.Tensor:
        x, y = self._windows(self.train_data, self.sampler.indices(step) * self.seq_len)
        with self._autocast():
            logits = self.logits(x, step, train=True)
        return per_trial_cross_entropy(logits.float().flatten(1, 2), y.flatten(1), self.smoothing)

    def evaluate(self) -> torch.Tensor:
        k, t = self.params.flat.shape[0], self.seq_len
        starts = val_starts(self.val_data, t)
        per_pass = max(
            1, min(max(self.batch_size, EVAL_BATCH_TOKENS // t), EVAL_TOKENS_PER_PASS // (k * t))
        )
        loss_sum = torch.zeros(k, device=self.device)
        wrong = torch.zeros(k, device=self.device)
        for chunk in starts.split(per_pass):
            x, y = self._windows(self.val_data, chunk)
            with self._autocast():
                logits = self.logits(x.expand(k, -1, -1), 0, train=False).float()
            logp = torch.log_softmax(logits, dim=-1).flatten(1, 2)
            labels = y.flatten().expand(k, -1)
            loss_sum -= logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(1)
            wrong += (logits.argmax(-1).flatten(1) != labels).float().sum(1)
        n = len(starts) * t
        loss = loss_sum / n
        return torch.stack([loss, wrong / n, loss / math.log(2)], dim=1)

    def segment_start(self, step: int) -> None:
        if self.attention_dropout > 0:  # SDPA's dropout draws from the global RNG
            group = 0
            for seed in self.seeds:
                group = mix_seed(group, seed)
            torch.manual_seed(mix_seed(group, 1_000_003 + step))

    def close(self) -> None:
        self.sampler.close()

    def select(self, rows: torch.Tensor) -> None:
        super().select(rows)
        self.seeds = [self.seeds[i] for i in rows.tolist()]
        self.sampler.select(rows)
        on_device = rows.to(self.device)
        self.dropout.select(on_device)
        if self.smoothing is not None:
            self.smoothing = self.smoothing.index_select(0, on_device)


def lm_trial_bytes(hp: Mapping[str, Any]) -> tuple[int, int]:
    """(device bytes per trial, per group) of a fused tiny-lm, on the safe side."""
    d, layers, t, b = (int(hp[n]) for n in ("d_model", "n_layers", "seq_len", "batch_size"))
    heads = int(hp["n_heads"])
    params = layers * 12 * d * d + (VOCAB + t) * d + (0 if hp["tie_embeddings"] else VOCAB * d)
    tokens = b * t
    activations = tokens * (layers * d * 40 + VOCAB * 16) + b * heads * t * t * 4
    fixed = EVAL_TOKENS_PER_PASS * (VOCAB * 12 + layers * d * 8)
    return params * 4 * 9 + activations, fixed


def train_lm_fused(hps: Sequence[Mapping[str, Any]], trials: Sequence[Any]) -> None:
    """builtin:tiny-lm for K trials at once (see :mod:`engine.workloads.fused`)."""
    LMFused(hps, trials).run()
