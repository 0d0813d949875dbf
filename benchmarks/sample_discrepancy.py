"""L2-star discrepancy of `tuneplay sample` points vs uniform random points.

n = 64 points over 4 nuisance dimensions, median over 20 seeds; target ratio <= 0.6.
Run: python benchmarks/sample_discrepancy.py
"""

from __future__ import annotations

import statistics

import numpy as np
from scipy.stats import qmc

from engine.search import preview
from engine.spec import parse_study

STUDY = """\
[study]
name = "disc"
workload = "builtin:digits-mlp"
max_train_steps = 100
budget = 64
seed = {seed}
[nuisance]
learning_rate = {{ low = 1e-4, high = 1e-1, scale = "log" }}
weight_decay  = {{ low = 1e-6, high = 1e-2, scale = "log" }}
dropout       = {{ low = 0.0, high = 0.5 }}
label_smoothing = {{ low = 0.0, high = 0.2 }}
"""


def main() -> None:
    ours, rand = [], []
    for seed in range(20):
        spec = parse_study(STUDY.format(seed=seed))
        rows = preview(spec, 64)
        unit = np.array([[p.to_unit(r[p.name]) for p in spec.nuisance] for r in rows])
        assert ((unit >= 0) & (unit <= 1)).all()
        ours.append(qmc.discrepancy(unit, method="L2-star"))
        rand.append(qmc.discrepancy(np.random.default_rng(seed).random((64, 4)), method="L2-star"))
    mo, mr = statistics.median(ours), statistics.median(rand)
    print(f"L2-star discrepancy, n=64, d=4, median of 20 seeds: tuneplay sample {mo:.5f}, "
          f"uniform random {mr:.5f}, ratio {mo / mr:.3f} (target <= 0.6)")


if __name__ == "__main__":
    main()
