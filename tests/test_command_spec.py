"""Command workloads as a study file writes them: validation of every key, argv as the
program receives it, and metrics read from its output (no training here: fast)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.runner.command import OutputReader, _read_metrics
from engine.spec import SpecError, load_study, spec_from_dict
from engine.workloads.command import CommandWorkload

STUDY = """\
[study]
name = "script"
metric = "val_loss"
max_train_steps = 200
eval_every = 50
budget = 4
[study.workload]
command = [{exe}, "train.py", "--out_dir={{checkpoint_dir}}", "--seed={{seed}}"]
cwd = "trainer"
bools = "python"
stdout = ['^step (?P<step>\\d+): val loss (?P<val_loss>[\\d.]+)']
[fixed]
compile = false
[nuisance]
learning_rate = {{ low = 1e-4, high = 1e-1, scale = "log" }}
"""


def write_study(tmp_path: Path, text: str | None = None, name: str = "study.toml") -> Path:
    (tmp_path / "trainer").mkdir(exist_ok=True)
    (tmp_path / "trainer" / "train.py").write_text("print('hi')\n")
    path = tmp_path / name
    path.write_text(text if text is not None else STUDY.format(exe='"python"'))
    return path


def test_a_workload_table_loads_with_cwd_resolved_against_the_study_file(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path))
    assert isinstance(spec.workload, CommandWorkload)
    assert spec.workload.cwd == str((tmp_path / "trainer").resolve())
    assert spec.workload.bools == "python" and spec.experiment == "train"
    assert spec_from_dict(spec.to_dict()) == spec  # stored and read back unchanged


def test_a_study_stored_before_the_table_existed_still_loads() -> None:
    old = {"name": "s", "workload": ["python", "t.py"], "metric": "val_error", "mode": "min",
           "max_train_steps": 10, "eval_every": 1, "budget": 2, "search": "quasi_random", "seed": 0}
    spec = spec_from_dict(old)
    assert spec.workload == CommandWorkload(("python", "t.py"))
    assert spec.workload.cwd == "" and spec.workload_ref == "command:python t.py"


def line(text: str, key: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if ln.lstrip().startswith(key))


BAD = {
    "bad_regex": (
        "stdout = ['^step (?P<step>\\\\d+): val loss (?P<val_loss>[\\\\d.]+']",
        "stdout", "stdout", "bad regular expression"),
    "no_named_group": ("stdout = ['^step (\\\\d+): val loss ([\\\\d.]+)']", "stdout", "stdout", "no named group"),
    "metric_not_captured": (
        "stdout = ['^step (?P<step>\\\\d+): loss (?P<loss>[\\\\d.]+)']",
        "stdout", "stdout", "no pattern captures the study's metric 'val_loss'"),
    "unknown_placeholder": (
        'resume = ["--resume={checkpoint_folder}"]',
        "resume", "resume", "unknown placeholder {checkpoint_folder}"),
    "unknown_bools": ('bools = "yes"', "bools", "bools", "must be one of lower, python, flag"),
    "unknown_key": ('shell = true', "shell", "shell", "unknown key"),
    "cwd_missing": ('cwd = "no-such-folder"', "cwd", "cwd", "is not a folder"),
    "unbalanced_brace": ('args = "--{name}={value"', "args", "args", "literal braces"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_new_key_is_validated_with_file_line_and_key(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    extra, key, at, reason = BAD[case]
    base = STUDY.format(exe='"python"')
    if extra.split(" =")[0] in ("stdout", "bools", "cwd"):
        target = next(ln for ln in base.splitlines() if ln.startswith(extra.split(" =")[0] + " ="))
        text = base.replace(target, extra)
    else:
        text = base.replace("[fixed]", extra + "\n[fixed]")
    path = write_study(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{path}:{line(text, at)}: study.workload.{key}: "), err
    assert reason in err and len(err.splitlines()) == 1


def test_a_script_missing_from_cwd_fails_validation_not_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_study(tmp_path, STUDY.format(exe='"python"').replace('"train.py"', '"trian.py"'))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "study.workload.command: 'trian.py' is not a file in" in err and "trainer" in err


def test_gpus_per_trial_is_checked(tmp_path: Path) -> None:
    path = write_study(tmp_path, STUDY.format(exe='"python"').replace("budget = 4", "budget = 4\ngpus_per_trial = 0"))
    with pytest.raises(SpecError, match=r"study.gpus_per_trial: must be between 1 and 64"):
        load_study(path)
    path = write_study(tmp_path, STUDY.format(exe='"python"').replace("budget = 4", "budget = 4\ngpus_per_trial = 2"))
    assert load_study(path).gpus_per_trial == 2


def test_the_inline_form_and_a_plain_string_command_stay_valid(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text("")
    text = (f'[study]\nname = "x"\nworkload = {{ command = [{sys.executable!r}, "t.py"] }}\n'
            'max_train_steps = 5\nbudget = 1\n')
    spec = load_study(write_study(tmp_path, text.replace("'", '"')))
    assert isinstance(spec.workload, CommandWorkload) and spec.workload.args == "--{name}={value}"


# ----------------------------------------------------------------------------- argv

BUILTINS = {"seed": 7, "trial_id": 3, "max_train_steps": 200, "eval_every": 50,
            "checkpoint_dir": "/ws/checkpoints/3/out", "device": "cpu", "gpus": 0}


def test_values_print_as_a_python_script_reads_them() -> None:
    w = CommandWorkload(("python", "train.py", "--seed={seed}"), bools="python")
    argv = w.argv(BUILTINS, {"compile": False, "lr": 0.0, "wd": 1e-5, "layers": 4, "name": "a b"})
    assert argv == ["python", "train.py", "--seed=7", "--compile=False", "--lr=0.0", "--wd=1e-05",
                    "--layers=4", "--name=a b"]


def test_lower_bools_by_default_and_flags_on_request() -> None:
    hp = {"tied": True, "compile": False, "dropout": 0.1}
    assert CommandWorkload(("t",)).argv(BUILTINS, hp) == ["t", "--tied=true", "--compile=false", "--dropout=0.1"]
    assert CommandWorkload(("t",), bools="flag").argv(BUILTINS, hp) == ["t", "--tied", "--dropout=0.1"]
    alone = CommandWorkload(("t", "{tied}", "{compile}", "--p={dropout}"), args="", bools="flag")
    assert alone.argv(BUILTINS, hp) == ["t", "--tied", "--p=0.1"]


def test_placeholders_escapes_and_resume() -> None:
    w = CommandWorkload(("torchrun", "--nproc_per_node={gpus}", "train.py", "cfg={{a}}", "--lr={lr}"),
                        args="-{name} {value}", resume=["--resume", "--from={checkpoint_dir}"])
    argv = w.argv(BUILTINS, {"lr": 0.01, "wd": 0.1}, resuming=True)
    # a hyperparameter placed in the command is not repeated; each token stays one token
    assert argv == ["torchrun", "--nproc_per_node=0", "train.py", "cfg={a}", "--lr=0.01", "-wd 0.1",
                    "--resume", "--from=/ws/checkpoints/3/out"]
    assert CommandWorkload(("t",), args="").argv(BUILTINS, {"lr": 1.0}) == ["t"]


# ----------------------------------------------------------------------------- output


class Ctx:
    """The part of the trial API the output reader calls."""

    def __init__(self) -> None:
        self.points: list[tuple[int, dict[str, float]]] = []
        self.trial_id = 1

    def report(self, step: int, **metrics: float) -> None:
        self.points.append((step, metrics))


def reader(stdout: list[str], start: int = 0) -> tuple[OutputReader, Ctx]:
    ctx = Ctx()
    r = OutputReader(CommandWorkload(("t",), stdout=tuple(stdout)), ctx, Path("/nonexistent"), start)  # type: ignore[arg-type]
    return r, ctx


def test_named_groups_are_metrics_with_their_step_and_the_last_line_counts_without_newline() -> None:
    r, ctx = reader([r"^step (?P<step>\d+): train loss (?P<train_loss>[\d.]+), val loss (?P<val_loss>[\d.]+)"])
    r.feed(b"compiling...\nstep 0: train loss 2.5, val loss 2.4\r\nstep 100: train loss 1.5, val")
    assert ctx.points == [(0, {"train_loss": 2.5, "val_loss": 2.4})]
    r.feed(b" loss 1.6\nstep 200: train loss 1.0, val loss 1.1")
    r.close()
    assert [p[0] for p in ctx.points] == [0, 100, 200] and r.last_line == "step 200: train loss 1.0, val loss 1.1"


def test_without_a_step_group_the_nth_match_is_step_n_and_a_resume_goes_on() -> None:
    r, ctx = reader([r"val_loss=(?P<val_loss>\S+)", r"train_loss=(?P<train_loss>\S+)"], start=5)
    for text in ("val_loss=0.5", "train_loss=0.7", "10%|###   | \rval_loss=nan", "val_loss=oops"):
        r.line(text)
    assert ctx.points[0] == (5, {"val_loss": 0.5}) and ctx.points[1] == (5, {"train_loss": 0.7})
    assert ctx.points[2][0] == 6 and math.isnan(ctx.points[2][1]["val_loss"])
    assert len(ctx.points) == 3  # a value that is no number is not a point


def test_steps_that_are_not_steps_are_refused_at_the_edge(tmp_path: Path) -> None:
    r, ctx = reader([r"step (?P<step>-?\d+) loss (?P<val_loss>\S+)"])
    r.line("step -5 loss 0.1")
    r.line("step 99999999999999999999 loss 0.1")
    assert ctx.points == []
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 99999999999999999999, "val_loss": 1}\n{"step": 1, "ok": true, "val_loss": 0.5}\n'
                    'garbage\n{"step": 2, "val_loss": 1e999999}\n{"step": 3, "val_loss": 0.25}')
    jctx = Ctx()
    offset = _read_metrics(path, 0, jctx)  # type: ignore[arg-type]
    assert jctx.points == [(1, {"val_loss": 0.5}), (2, {"val_loss": math.inf})]  # true is not 1.0
    _read_metrics(path, offset, jctx, final=True)  # type: ignore[arg-type]
    assert jctx.points[-1] == (3, {"val_loss": 0.25})



def test_each_attempt_header_starts_a_line_even_after_a_program_stopped_mid_line(tmp_path: Path) -> None:
    from engine.runner.command import run_command
    from engine.runner.context import TrialContext
    from engine.spec import parse_study
    from engine.store import open_store
    from engine.workspace import launch_study

    ws = tmp_path / ".tuneplay"
    store = open_store(ws)
    script = tmp_path / "one.py"
    script.write_text("print('step 0 val_loss 0.5')\n")
    study = (f'[study]\nname = "h"\nmetric = "val_loss"\nmax_train_steps = 2\nbudget = 1\n[study.workload]\n'
             f'command = [{json.dumps(sys.executable)}, "one.py"]\n'
             "stdout = ['^step (?P<step>\\d+) val_loss (?P<val_loss>\\S+)']\n")
    spec = parse_study(study, str(tmp_path / "h.toml"))
    launch_study(store, spec)
    (trial,) = store.claim_trials("w", "cpu", limit=1)
    folder = ws / "checkpoints" / str(trial.id)
    folder.mkdir(parents=True)
    (folder / "output.log").write_text("--- attempt 1: [] in /\nstep 7: train loss 0.1, val")  # killed mid-line
    ctx = TrialContext(store, trial, "val_loss", "min", 1, folder, "cpu")
    assert isinstance(spec.workload, CommandWorkload)
    run_command(spec.workload, {}, ctx, ws, attempt=2)
    lines = (folder / "output.log").read_text().splitlines()
    assert lines[1] == "step 7: train loss 0.1, val" and lines[2].startswith("--- attempt 2: [")
    assert ctx.best_value == 0.5
