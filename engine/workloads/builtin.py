"""Metadata of the built-in workloads: names, hyperparameters, metrics, chance levels.

This module must stay torch-free: the fast CLI imports it to validate study files and to
show what a workload accepts, and importing torch would cost seconds. The training code
lives in :mod:`engine.workloads.digits` and :mod:`engine.workloads.lm` (named by
``entry``) and reads exactly the hyperparameters declared here.

Conventions the engine can rely on:

* Every hyperparameter is read on every run, so a config must name all of them (the
  engine fills in :meth:`WorkloadInfo.defaults`); an unknown choice or a value outside
  the hard bounds is a ``ValueError`` from the training function.
* ``warmup_fraction`` is a fraction of ``max_train_steps`` (not a step count), so one value
  means the same schedule shape when a study changes ``max_train_steps``. Only the
  ``linear_warmup_cosine`` schedule uses it.
* ``weight_decay`` is L2 added to the gradient for sgd / momentum / nesterov / adam and
  decoupled decay for adamw; it applies to weight matrices (ndim >= 2), not to biases
  or normalisation gains.
* ``label_smoothing`` changes the training loss only; ``val_loss`` is always plain
  cross-entropy so it stays comparable across trials.
"""

from __future__ import annotations

import math

from engine.workloads.base import HParamInfo, WorkloadInfo

OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear_warmup_cosine", "linear_decay")
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "tanh", "silu")

# The hyperparameters each optimizer needs tuned (playbook: SGD+momentum 2, Adam 4).
OPTIMIZER_HPARAMS: dict[str, tuple[str, ...]] = {
    "sgd": ("learning_rate",),
    "momentum": ("learning_rate", "momentum"),
    "nesterov": ("learning_rate", "momentum"),
    "adam": ("learning_rate", "beta1", "beta2", "epsilon"),
    "adamw": ("learning_rate", "beta1", "beta2", "epsilon"),
}

DIGITS_TRAIN_SIZE = 1397
DIGITS_VAL_SIZE = 400


def _h(
    name: str,
    default: object,
    kind: str = "float",
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    choices: tuple[object, ...] | None = None,
) -> HParamInfo:
    return HParamInfo(
        name=name, default=default, kind=kind, choices=choices, help=help, low=low, high=high
    )


def optimizer_hparams(
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    beta2: float = 0.999,
) -> list[HParamInfo]:
    """The optimizer, schedule and loss hyperparameters every built-in workload shares."""
    return [
        _h(
            "optimizer",
            optimizer,
            "choice",
            "update rule; momentum = SGD with heavy-ball momentum",
            choices=OPTIMIZERS,
        ),
        _h("learning_rate", learning_rate, help="peak learning rate (> 0)", low=0.0),
        _h("momentum", 0.9, help="momentum for momentum / nesterov, in [0, 1)", low=0.0, high=1.0),
        _h("beta1", 0.9, help="Adam first-moment decay, in [0, 1)", low=0.0, high=1.0),
        _h("beta2", beta2, help="Adam second-moment decay, in [0, 1)", low=0.0, high=1.0),
        _h("epsilon", 1e-8, help="Adam denominator epsilon (> 0)", low=0.0),
        _h(
            "weight_decay",
            weight_decay,
            help="L2 (decoupled for adamw) on weight matrices",
            low=0.0,
        ),
        _h(
            "schedule",
            "constant",
            "choice",
            "learning-rate schedule over max_train_steps",
            choices=SCHEDULES,
        ),
        _h(
            "warmup_fraction",
            0.05,
            help="linear warmup length as a fraction of "
            "max_train_steps (linear_warmup_cosine only)",
            low=0.0,
            high=1.0,
        ),
        _h(
            "label_smoothing",
            0.0,
            help="label smoothing of the training loss, in [0, 1)",
            low=0.0,
            high=1.0,
        ),
        _h("grad_clip", 0.0, help="clip the global gradient norm to this value; 0 = off", low=0.0),
    ]


def _table(items: list[HParamInfo]) -> dict[str, HParamInfo]:
    return {info.name: info for info in items}


def _digits_mlp() -> WorkloadInfo:
    hps = [
        _h("width", 128, "int", "units per hidden layer", low=1, high=65536),
        _h("depth", 2, "int", "number of hidden layers (0 = linear softmax)", low=0, high=64),
        _h("activation", "relu", "choice", "hidden nonlinearity", choices=ACTIVATIONS),
        _h("dropout", 0.0, help="dropout after each hidden layer, in [0, 1)", low=0.0, high=1.0),
        _h("batch_size", 64, "int", "examples per step", low=1, high=DIGITS_TRAIN_SIZE),
    ]
    return WorkloadInfo(
        ref="builtin:digits-mlp",
        kind="builtin",
        entry="engine.workloads.digits:train_mlp",
        hyperparameters=_table(hps + optimizer_hparams()),
        metrics=("train_loss", "val_loss", "val_error"),
        chance={"val_error": 0.9, "val_loss": math.log(10)},
        description="MLP on scikit-learn's 8x8 handwritten digits (1,397 train / 400 "
        "validation images, offline). Trains in about a second on a CPU.",
        shape_keys=("width", "depth", "batch_size"),
    )


def _digits_cnn() -> WorkloadInfo:
    hps = [
        _h("channels", 32, "int", "channels of every conv layer", low=1, high=4096),
        _h(
            "depth",
            2,
            "int",
            "conv layers (3x3, 2x2 max-pool after each of the first 3)",
            low=1,
            high=16,
        ),
        _h("activation", "relu", "choice", "nonlinearity after each conv", choices=ACTIVATIONS),
        _h("dropout", 0.0, help="dropout before the classifier, in [0, 1)", low=0.0, high=1.0),
        _h("batch_size", 64, "int", "examples per step", low=1, high=DIGITS_TRAIN_SIZE),
    ]
    return WorkloadInfo(
        ref="builtin:digits-cnn",
        kind="builtin",
        entry="engine.workloads.digits:train_cnn",
        hyperparameters=_table(hps + optimizer_hparams()),
        metrics=("train_loss", "val_loss", "val_error"),
        chance={"val_error": 0.9, "val_loss": math.log(10)},
        description="Small convolutional net on scikit-learn's 8x8 handwritten digits "
        "(1,397 train / 400 validation images, offline). Seconds on a CPU.",
        shape_keys=("channels", "depth", "batch_size"),
    )


# Unigram level of the stdlib byte corpus (predict byte frequencies only, no context):
# the bar a language model must clearly beat to show it learned anything.
LM_UNIGRAM_NATS = 3.14
LM_UNIGRAM_ERROR = 0.72


def _tiny_lm() -> WorkloadInfo:
    hps = [
        _h("d_model", 256, "int", "residual stream width", low=8, high=16384),
        _h("n_layers", 4, "int", "Transformer blocks", low=1, high=128),
        _h("n_heads", 4, "int", "attention heads (must divide d_model)", low=1, high=256),
        _h("seq_len", 256, "int", "context length in bytes", low=2, high=16384),
        _h("batch_size", 64, "int", "sequences per step", low=1, high=65536),
        _h(
            "dropout",
            0.0,
            help="dropout on embeddings, attention and residuals, in [0, 1)",
            low=0.0,
            high=1.0,
        ),
        _h("activation", "gelu", "choice", "MLP nonlinearity", choices=ACTIVATIONS),
        _h("tie_embeddings", True, "bool", "share the input embedding with the output head"),
    ]
    return WorkloadInfo(
        ref="builtin:tiny-lm",
        kind="builtin",
        entry="engine.workloads.lm:train_lm",
        hyperparameters=_table(hps + optimizer_hparams("adamw", 1e-3, 0.1, 0.99)),
        metrics=("train_loss", "val_loss", "val_error", "val_bpb"),
        chance={
            "val_loss": LM_UNIGRAM_NATS,
            "val_error": LM_UNIGRAM_ERROR,
            "val_bpb": LM_UNIGRAM_NATS / math.log(2),
        },
        description="Decoder-only Transformer byte-level language model on the Python "
        "standard library's own source (offline). val_loss is nats/byte; chance is the "
        "unigram (byte-frequency) level. Sized for a GPU by default.",
        shape_keys=("d_model", "n_layers", "n_heads", "seq_len", "batch_size", "tie_embeddings"),
        default_metric="val_loss",
    )


BUILTINS: dict[str, WorkloadInfo] = {
    "digits-mlp": _digits_mlp(),
    "digits-cnn": _digits_cnn(),
    "tiny-lm": _tiny_lm(),
}
