"""Claims under contention: many worker processes claim, under leases, and finish trials.

Run: ``python benchmarks/claim_bench.py [--store URL ...] [--workers 32] [--trials 10000]``.

Each worker is a process with its own connection that loops: claim one trial (a lease of 60 s),
finish it with its lease token, until the queue is empty. Printed per store, side by side:
claims per second (all workers together), median and p99 claim latency, duplicates (a trial
handed to two workers: must be 0) and lost trials (not COMPLETED at the end: must be 0).

Stores: ``sqlite`` (a fresh workspace in a temporary folder) and every ``--store URL``; with no
``--store``, a throwaway PostgreSQL server is started (as the tests do) so both are measured
in one run. Asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import median, pct
from engine.store import NewTrial, TrialProgress, TrialState, connect, open_store


def _open(target: str) -> Any:
    if target.startswith("postgres"):
        return connect(target, tempfile.gettempdir())
    return open_store(target)


def _worker(target: str, name: str, start: Any, out: Any) -> None:
    store = _open(target)
    start.wait()
    claimed: list[int] = []
    latencies: list[float] = []
    done = TrialProgress(TrialState.COMPLETED, best_step=0, best_value=0.5, steps_done=1)
    while True:
        t0 = time.perf_counter()
        trials = store.claim_trials(name, "cpu", limit=1, host="bench", lease_seconds=60)
        latencies.append(time.perf_counter() - t0)
        if not trials:
            break
        for t in trials:
            claimed.append(t.id)
            store.finish_trial(t.id, done, lease=t.lease_token)
    store.close()
    out.put((claimed, latencies[:-1]))  # the last claim found the queue empty


def _prepare(target: str, trials: int) -> None:
    store = _open(target)
    exp = store.create_experiment("bench", "builtin:bench")
    study = store.create_study(exp.id, "claims", {"max_train_steps": 1}, seed=0)
    for first in range(0, trials, 5000):
        store.add_trials(study.id, [NewTrial({"i": i}, i) for i in range(first, min(trials, first + 5000))])
    store.close()


def measure(target: str, workers: int, trials: int) -> dict[str, float]:
    _prepare(target, trials)
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(target, f"w{i}", start, out)) for i in range(workers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # every worker connected
    t0 = time.perf_counter()
    start.set()
    results = [out.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    ids = [i for claimed, _ in results for i in claimed]
    lat = [x for _, latencies in results for x in latencies]
    store = _open(target)
    completed = len(store.list_trials(states=[TrialState.COMPLETED]))
    store.close()
    counts = Counter(ids)
    return {"claims/s": len(ids) / wall, "p50 ms": 1000 * median(lat), "p99 ms": 1000 * pct(lat, 99),
            "duplicates": sum(c - 1 for c in counts.values() if c > 1), "lost": trials - completed,
            "wall s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", action="append", default=[], metavar="URL")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    cluster = None
    targets = {"sqlite": str(Path(tempfile.mkdtemp(prefix="claim-bench-")) / "ws")}
    urls = list(args.store)
    if not urls:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from pg_cluster import PgCluster

        cluster = PgCluster()
        cluster.start()
        urls = [cluster.url(cluster.create_database())]
    try:
        from engine.store.postgres import init_db

        for url in urls:
            init_db(url)
            targets["postgresql" if len(urls) == 1 else url] = url
        print(f"{args.workers} worker processes, {args.trials} trials, one claim and one finish each "
              f"({os.cpu_count()} CPUs)")
        print(f"{'store':<12}{'claims/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'duplicates':>12}{'lost':>6}{'wall s':>8}")
        for name, target in targets.items():
            r = measure(target, args.workers, args.trials)
            print(f"{name:<12}{r['claims/s']:>10.0f}{r['p50 ms']:>9.1f}{r['p99 ms']:>9.1f}"
                  f"{r['duplicates']:>12.0f}{r['lost']:>6.0f}{r['wall s']:>8.1f}", flush=True)
    finally:
        if cluster is not None:
            cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
