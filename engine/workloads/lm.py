"""builtin:tiny-lm: a byte-level decoder-only Transformer on the Python stdlib's source.

The corpus needs no download: the ``.py`` files of a fixed list of standard-library
modules, read from ``sysconfig.get_paths()["stdlib"]`` in list order and concatenated
(about 2.9 MB on CPython 3.11; the exact text follows the interpreter's version). The last
10% of the bytes are the validation split. The vocabulary is the 256 byte values, so there
is no tokenizer. Validation is a fixed set of non-overlapping windows (``VAL_TOKENS``
bytes in all), independent of ``batch_size``.

On CUDA the forward pass runs under bf16 autocast (flash attention); on CPU in float32.
"""

from __future__ import annotations

import math
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.workloads.builtin import ACTIVATIONS
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

VOCAB = 256
VAL_FRACTION = 0.1
VAL_TOKENS = 32_768  # bytes scored per evaluation
EVAL_BATCH_TOKENS = 16_384  # evaluate at least this many bytes per forward pass
MAX_CORPUS_BYTES = 4_000_000
CORPUS_MODULES: tuple[str, ...] = (
    "argparse",
    "ast",
    "base64",
    "bdb",
    "calendar",
    "codecs",
    "collections/__init__",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "difflib",
    "dis",
    "doctest",
    "enum",
    "fractions",
    "ftplib",
    "functools",
    "gettext",
    "heapq",
    "inspect",
    "ipaddress",
    "locale",
    "logging/__init__",
    "mailbox",
    "ntpath",
    "optparse",
    "os",
    "pdb",
    "pickle",
    "pickletools",
    "platform",
    "posixpath",
    "pprint",
    "pstats",
    "pydoc",
    "queue",
    "random",
    "shutil",
    "smtplib",
    "socket",
    "ssl",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "tokenize",
    "traceback",
    "typing",
    "uuid",
    "json/decoder",
    "json/encoder",
    "email/message",
    "unittest/case",
)

# (train bytes, val bytes) as uint8 tensors, per device string.
_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def corpus_bytes() -> bytes:
    """The concatenated source of :data:`CORPUS_MODULES` (missing modules are skipped)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[bytes] = []
    total = 0
    for module in CORPUS_MODULES:
        path = root / f"{module}.py"
        if not path.is_file():
            continue
        data = path.read_bytes()
        parts.append(data)
        total += len(data)
        if total >= MAX_CORPUS_BYTES:
            break
    text = b"".join(parts)[:MAX_CORPUS_BYTES]
    if len(text) < 100_000:
        raise RuntimeError(f"tiny-lm corpus: only {len(text)} bytes of stdlib source under {root}")
    return text


def lm_data(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)`` byte tensors (uint8) on ``device``."""
    if "cpu" not in _CACHE:
        data = torch.frombuffer(bytearray(corpus_bytes()), dtype=torch.uint8)
        cut = int(len(data) * (1 - VAL_FRACTION))
        _CACHE["cpu"] = (data[:cut].clone(), data[cut:].clone())
    if device not in _CACHE:
        train, val = _CACHE["cpu"]
        _CACHE[device] = (train.to(device), val.to(device))
    return _CACHE[device]


def windows(
    data: torch.Tensor, starts: torch.Tensor, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-byte targets, each (len(starts), seq_len), for windows at ``starts``."""
    offsets = torch.arange(seq_len + 1, device=data.device)
    chunk = data[starts[:, None] + offsets].long()
    return chunk[:, :-1], chunk[:, 1:]


def val_starts(val: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Starts of the fixed validation windows: evenly spaced, non-overlapping."""
    available = (len(val) - 1) // seq_len
    count = max(1, min(available, VAL_TOKENS // seq_len))
    stride = available // count
    return torch.arange(count, device=val.device) * stride * seq_len


class Block(nn.Module):
    """A pre-LN Transformer block: causal self-attention then an MLP, each residual."""

    def __init__(self, d_model: int, n_heads: int, activation: str, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            make_activation(activation),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )
        self.resid_drop = nn.Dropout(dropout)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ByteTransformer(nn.Module):
    """Token + learned position embedding, pre-LN blocks, final LayerNorm, linear head."""

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        n_heads: int,
        seq_len: int,
        activation: str,
        dropout: float,
        tie_embeddings: bool,
    ):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, activation, dropout) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB, bias=False)
        if tie_embeddings:
            self.head.weight = self.tok.weight
        self._init_weights(n_layers)

    def _init_weights(self, n_layers: int) -> None:
        # GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers).
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                std = (
                    0.02 / math.sqrt(2 * n_layers)
                    if name.endswith(("proj.weight", "mlp.2.weight"))
                    else 0.02
                )
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_lm(hp: Mapping[str, Any]) -> ByteTransformer:
    """The model described by ``hp`` (reads the architecture hyperparameters)."""
    d_model = check_positive_int(hp, "d_model")
    n_heads = check_positive_int(hp, "n_heads")
    if d_model % n_heads:
        raise ValueError(f"hyperparameter n_heads={n_heads}: must divide d_model={d_model}")
    tie = hp["tie_embeddings"]
    if tie not in (True, False):
        raise ValueError(f"hyperparameter tie_embeddings={tie!r}: expected true or false")
    return ByteTransformer(
        d_model=d_model,
        n_layers=check_positive_int(hp, "n_layers"),
        n_heads=n_heads,
        seq_len=check_positive_int(hp, "seq_len", low=2),
        activation=check_choice(hp, "activation", ACTIVATIONS),
        dropout=read_dropout(hp),
        tie_embeddings=bool(tie),
    )


def _autocast(device: str) -> torch.autocast:
    on_cuda = device.startswith("cuda")
    return torch.autocast("cuda" if on_cuda else "cpu", dtype=torch.bfloat16, enabled=on_cuda)


def lm_metrics(
    model: nn.Module, val: torch.Tensor, seq_len: int, batch_size: int, device: str
) -> dict[str, float]:
    """``val_loss`` (nats/byte), ``val_error`` (next-byte error) and ``val_bpb``."""
    starts = val_starts(val, seq_len)
    loss_sum = torch.zeros((), device=val.device)
    wrong = torch.zeros((), device=val.device)
    for chunk in starts.split(max(batch_size, EVAL_BATCH_TOKENS // seq_len)):
        x, y = windows(val, chunk, seq_len)
        with _autocast(device):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        wrong += (logits.argmax(-1) != y).sum()
    n = len(starts) * seq_len
    loss, error = (torch.stack([loss_sum, wrong.float()]) / n).tolist()
    return {"val_loss": loss, "val_error": error, "val_bpb": loss / math.log(2)}


def train_lm(hp: Mapping[str, Any], trial: Any) -> None:
    """builtin:tiny-lm: train the byte-level Transformer and report train_loss, val_loss,
    val_error and val_bpb at every evaluation point."""
    cfg = OptimConfig.from_hp(hp)
    batch_size = check_positive_int(hp, "batch_size")
    device = str(trial.device)
    train, val = lm_data(device)
    torch.manual_seed(trial.seed)
    model = build_lm(hp).to(device)
    seq_len = model.pos.num_embeddings
    optimizer = build_optimizer(model, cfg)
    n_windows = (len(train) - 1) // seq_len
    sampler = EpochSampler(n_windows, batch_size, trial.seed, device)

    def loss_at(step: int) -> torch.Tensor:
        x, y = windows(train, sampler.indices(step) * seq_len, seq_len)
        with _autocast(device):
            logits = model(x)
        return F.cross_entropy(
            logits.float().flatten(0, 1), y.flatten(), label_smoothing=cfg.label_smoothing
        )

    def evaluate() -> dict[str, float]:
        return lm_metrics(model, val, seq_len, batch_size, device)

    run_training(trial, model, optimizer, cfg, loss_at, evaluate)
