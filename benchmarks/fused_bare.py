"""Bare-loop throughput of fused training: trial-steps/s of one trial vs K trials fused.

A 64-128-128-10 MLP, batch 64, Adam, on random data already on the device; no engine, no
reporting. "one trial" is the plain loop (nn.Module + torch.optim.Adam); "fused" is the
built-in fused path (stacked flat weights, baddbmm, StackedOptimizer) with each trial's own
learning rate; "vmap" is what a user workload gets from torch.func + stacked_optimizer_step.
A trial-step is one optimizer step of one trial, so K trials fused for S steps = K * S.

Run: python benchmarks/fused_bare.py [--device cuda] [--sizes 8,32,128,512] [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from engine.workloads.builtin import BUILTINS
from engine.workloads.common import OptimConfig
from engine.workloads.fused_optim import StackedOptimizer, stacked_optimizer_step
from engine.workloads.fused_parts import StackedParams

BATCH, DATA = 64, 4096


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def timed(step: Callable[[int], None], device: str, seconds: float) -> float:
    """Steps per second of ``step`` after a warm-up, synchronizing a GPU around the clock."""
    for i in range(5):
        step(i)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            step(n)
            n += 1
        sync()
        if time.perf_counter() - start > seconds:
            return n / (time.perf_counter() - start)


def one_trial(device: str, x: torch.Tensor, y: torch.Tensor, seconds: float) -> float:
    model = mlp().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(i: int) -> None:
        idx = torch.randint(0, DATA, (BATCH,), device=device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, device, seconds)


def fused(k: int, device: str, x: torch.Tensor, y: torch.Tensor, seconds: float) -> float:
    base = BUILTINS["digits-mlp"].defaults()
    cfgs = [
        OptimConfig.from_hp({**base, "optimizer": "adam", "learning_rate": 1e-3 * (1 + i % 7)})
        for i in range(k)
    ]
    params = StackedParams([mlp() for _ in range(k)], device)
    opt = StackedOptimizer("adam", cfgs, params.n_columns, params.n_decay, 10**9, device)

    def step(i: int) -> None:
        idx = torch.randint(0, DATA, (k, BATCH), device=device)
        h = x[idx]
        leaves = params.leaves
        for j in range(0, len(leaves), 2):
            h = torch.baddbmm(leaves[j + 1].unsqueeze(1), h, leaves[j].transpose(1, 2))
            if j + 2 < len(leaves):
                h = torch.relu(h)
        loss = F.cross_entropy(h.flatten(0, 1), y[idx].flatten(), reduction="none")
        grads = torch.autograd.grad(loss.view(k, BATCH).mean(1).sum(), leaves)
        opt.step(params.flat, params.flat_grad(grads), i, mixed=False)

    return k * timed(step, device, seconds)


def fused_vmap(k: int, device: str, x: torch.Tensor, y: torch.Tensor, seconds: float) -> float:
    params, _ = stack_module_state([mlp().to(device) for _ in range(k)])
    params = {n: p.detach() for n, p in params.items()}
    template = mlp().to("meta")

    def loss_one(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(template, p, (xb,)), yb)

    grad_all = vmap(grad_and_value(loss_one))
    hp = {"learning_rate": torch.linspace(1e-3, 7e-3, k, device=device)}
    state: dict[str, object] = {}
    names = list(params)

    def step(i: int) -> None:
        idx = torch.randint(0, DATA, (k, BATCH), device=device)
        grads, _ = grad_all(params, x[idx], y[idx])
        stacked_optimizer_step(
            [params[n] for n in names], [grads[n] for n in names], state, hp, optimizer="adam"
        )

    return k * timed(step, device, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    default = "8,32" if device == "cpu" else "8,32,128,512"
    sizes = [int(s) for s in (args.sizes or default).split(",")]
    torch.manual_seed(0)
    x = torch.randn(DATA, 64, device=device)
    y = torch.randint(0, 10, (DATA,), device=device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(
        f"device {device} ({name}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, MLP 64-128-128-10, batch {BATCH}, Adam"
    )
    single = one_trial(device, x, y, args.seconds)
    print(f"{'one trial':>12}: {single:10.0f} trial-steps/s")
    for k in sizes:
        f = fused(k, device, x, y, args.seconds)
        v = fused_vmap(k, device, x, y, args.seconds)
        print(
            f"{'K=' + str(k):>12}: {f:10.0f} trial-steps/s fused ({f / single:6.1f}x)"
            f"   {v:10.0f} vmap+stacked_optimizer_step ({v / single:6.1f}x)"
        )


if __name__ == "__main__":
    main()
