"""CLI commands of the analysis and decision stages and the batch-size probe: ``next``,
``rerun``, ``decide``, ``probe-batch``.

(``report`` draws charts, so it lives with the app in :mod:`tuneplay_tui.report_cli`.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.cli import UserError, open_existing_store, study_named


def register(sub: Any) -> None:
    p = sub.add_parser("next", help="write the next round's study file from a study's analysis")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write it ('-': print it; default: beside the study's file)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(handler=cmd_next)

    p = sub.add_parser("rerun", help="rerun the best configurations and the baseline with new seeds")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--best", type=int, default=1, metavar="K", help="how many of the best configurations (default 1)")
    p.add_argument("--seeds", type=int, default=5, metavar="N", help="new seeds for each (default 5)")
    p.set_defaults(handler=cmd_rerun)

    p = sub.add_parser("decide", help="compare the rerun candidate with the baseline and record the verdict")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--adopt", action="store_true", help="on an ADOPT verdict, launch the next baseline version")
    p.add_argument("--force", action="store_true", help="with --adopt: adopt whatever the verdict")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(handler=cmd_decide)

    p = sub.add_parser("probe-batch", help="examples/s and memory at powers of two; recommend a batch size")
    p.add_argument("workload", metavar="WORKLOAD", help="e.g. builtin:digits-mlp")
    p.add_argument("--max-batch", type=int, default=4096, metavar="N")
    p.add_argument("--min-batch", type=int, default=8, metavar="N")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a hyperparameter for the probe (repeatable)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(handler=cmd_probe)


def _study(store: Any, name: str) -> Any:
    return study_named(store, name)


def cmd_next(args: argparse.Namespace) -> int:
    """Analyse the study, resolve its findings into one plan, write the next study file."""
    from engine.cli import workspace_dir
    from engine.reporting import load_report

    store = open_existing_store(args)
    study = _study(store, args.study)
    report = load_report(store, study, workspace=workspace_dir(args)).report
    plan = report.next_round
    if plan is None:
        raise UserError(f"study {study.name!r} has {report.n_feasible} finished results; a next "
                        "round needs at least 3 to plan from")
    if args.output == "-":
        sys.stdout.write(plan.draft)
        return 0
    target = Path(args.output or plan.path)
    if target.exists() and not args.force:
        raise UserError(f"{target} exists; pass --force to overwrite it, or -o another file")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(plan.draft, encoding="utf-8")
    shown = _shown(target)
    print(f"wrote {shown}: study {plan.name!r}, the next round of {study.name!r}")
    for line in plan.lines():
        print(f"  {line}")
    print(f"check it: tuneplay validate {shown}   run it: tuneplay run {shown}")
    return 0


def _shown(path: Path) -> str:
    """A path as the user typed it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cmd_rerun(args: argparse.Namespace) -> int:
    from engine.decisions import plan_reruns
    from engine.runner.control import start_engine

    store = open_existing_store(args)
    study = _study(store, args.study)
    if not 1 <= args.best <= 100 or not 1 <= args.seeds <= 1000:
        raise UserError("--best must be 1-100 and --seeds 1-1000")
    plan = plan_reruns(store, study, args.best, args.seeds)
    print(f"enqueued {len(plan.trials)} reruns of study {study.name!r}: "
          f"{len(plan.candidates)} candidate(s) and the baseline, {len(plan.seeds)} new seeds each")
    for i, c in enumerate(plan.candidates, 1):
        print(f"  candidate {i}: " + ", ".join(f"{k}={v}" for k, v in c.items()))
    print("  baseline:    " + ", ".join(f"{k}={v}" for k, v in plan.baseline.items()))
    from engine.spec import stored_study

    note = seed_note(stored_study(study).spec.workload)
    if note:
        print(note)
    if args.store:  # the hosts serving the shared store run them; none: this machine's engine
        from engine.status import engine_hosts, hosts_line

        hosts = engine_hosts(store)
        print(f"engine: {hosts_line(hosts)}")
        if not hosts:
            start_engine(_ws(args), url=args.store)
    else:
        start_engine(_ws(args))
    print(f"when they finish: tuneplay decide {study.name}")
    return 0


def seed_note(workload: Any) -> str | None:
    """A heads-up before reruns of a command that is never handed its seed: they would all
    train alike, and ``decide`` refuses identical reruns."""
    from engine.trial_checks import as_command, passes

    command = as_command(workload)
    if command is None or passes(command, "seed"):
        return None
    return ("note: the command has no {seed}: unless the script reads $TUNEPLAY_SEED, every rerun "
            "trains with the same seed and comes out identical, and `decide` will not judge them; "
            'put {seed} in its command (e.g. "--seed={seed}")')


def _ws(args: argparse.Namespace) -> Any:
    from engine.cli import workspace_dir

    return workspace_dir(args)


def cmd_decide(args: argparse.Namespace) -> int:
    from engine.decisions import decide

    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    store = open_existing_store(args)
    study = _study(store, args.study)
    result = decide(store, study, adopt=args.adopt, alpha=args.alpha, force=args.force)
    if args.format == "json":
        print(json.dumps(decision_dict(result), indent=1, default=str))
    else:
        print(decision_text(result))
    if args.adopt and result.new_baseline is None:
        print(f"not adopted: the verdict is {result.comparison.verdict}, not adopt "
              "(--force adopts anyway)")
        return 1
    return 0


def decision_dict(result: Any) -> dict[str, Any]:
    c = result.comparison
    return {
        "decision_id": result.decision.id, "verdict": c.verdict, "reason": c.reason,
        "candidate": result.candidate, "baseline_version": result.baseline.version,
        "comparison": c.to_dict(), "complexity": result.complexity, "protocol": result.protocol,
        "new_baseline_version": result.new_baseline.version if result.new_baseline else None,
    }


def decision_text(result: Any) -> str:
    from engine.space import format_value as f

    c = result.comparison
    cand = ", ".join(f"{k}={f(v)}" for k, v in result.candidate.items())
    test = (f"test: {c.test}: t = {f(c.t_statistic)}, p = {f(c.p_value)}, "
            f"95% interval of the difference [{f(c.ci_low)}, {f(c.ci_high)}]")
    if c.seed_ignored:
        test = (f"test: not run: the {' and '.join(c.seed_ignored)} seed reruns are identical, "
                "so there is no trial variance to test against")
    lines = [
        f"candidate: {cand}   vs   baseline v{result.baseline.version}",
        (f"reruns: candidate {f(c.mean_candidate)} ±{f(c.std_candidate)} (n={c.n_candidate})   "
         f"baseline {f(c.mean_baseline)} ±{f(c.std_baseline)} (n={c.n_baseline})"),
        test,
        f"verdict: {c.verdict.upper()} — {c.reason}",
        f"complexity: {result.complexity}",
        f"protocol: {result.protocol}",
        f"recorded as decision {result.decision.id}",
    ]
    if result.new_baseline:
        lines.append(f"adopted: baseline v{result.new_baseline.version} launched with the candidate's values")
    return "\n".join(lines)


def cmd_probe(args: argparse.Namespace) -> int:
    from engine.analysis import recommend_batch_size
    from engine.probe import probe_batch
    from engine.workloads.registry import WorkloadError

    hp = dict(_parse_set(s) for s in args.set)
    try:
        rows = probe_batch(args.workload, hp, args.max_batch, args.device, args.min_batch)
    except (WorkloadError, ValueError) as exc:
        raise UserError(f"{args.workload}: {exc}") from None
    rec = recommend_batch_size(rows)
    if args.format == "json":
        print(json.dumps({"probes": rows, "recommended": rec.batch_size, "reason": rec.reason}, indent=1))
        return 0
    print(f"{'batch':>7} {'examples/s':>12} {'step ms':>9} {'peak memory':>12}  gain")
    for p in rec.probes:
        row = next(r for r in rows if r["batch_size"] == p.batch_size)
        if p.oom:
            print(f"{p.batch_size:>7} {'out of memory':>12}")
            continue
        gain = "" if p.gain_over_previous is None else f"{p.gain_over_previous:+.0%}"
        mem = f"{(p.peak_mem_bytes or 0) / 2**20:,.0f} MiB"
        print(f"{p.batch_size:>7} {p.examples_per_s:>12,.0f} {row.get('step_ms', 0):>9.2f} {mem:>12}  {gain}")
    print(f"recommended batch size: {rec.batch_size} — {rec.reason}")
    print("(batch size sets training speed, not validation performance: re-tune the learning rate when you change it)")
    return 0


def _parse_set(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected NAME=VALUE")
    name, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value
