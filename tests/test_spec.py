"""Study files: the example loads; each malformed case exits 2 with FILE:LINE: key: reason."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.spec import SpecError, load_study

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
[study]
name = "digits-mlp-lr"
workload = "builtin:digits-mlp"
goal = "Find a good Adam learning rate"
metric = "val_error"
mode = "min"
max_train_steps = 300
eval_every = 50
budget = 16
search = "quasi_random"      # or "bayesian"
seed = 0
[fixed]
optimizer = "adam"
batch_size = 64
[nuisance]
learning_rate = { low = 1e-4, high = 1e-1, scale = "log" }
weight_decay  = { low = 1e-6, high = 1e-2, scale = "log" }
[scientific]
activation = { values = ["relu", "tanh"] }
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", str(path)])
    err = capsys.readouterr().err.strip()
    return code, err


def test_issue_example_loads(tmp_path: Path) -> None:
    spec = load_study(write(tmp_path, GOOD))
    assert spec.name == "digits-mlp-lr"
    assert [p.name for p in spec.nuisance] == ["learning_rate", "weight_decay"]
    assert spec.scientific[0].values == ("relu", "tanh")
    assert spec.fixed == {"optimizer": "adam", "batch_size": 64}
    assert spec.scientific_mode == "per_value"


def test_every_shipped_study_validates(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (ROOT / "studies").glob("*.toml"))
    assert files, "studies/ holds example study files"
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == len(files)


BAD_CASES = {
    "unknown_key": (GOOD.replace("seed = 0", "seed = 0\nsead = 1"), 12, "study.sead", "unknown key"),
    "unknown_table": (GOOD + "[extra]\nx = 1\n", 20, "extra", "unknown table"),
    "missing_required": (GOOD.replace('name = "digits-mlp-lr"\n', ""), 1, "study.name", "missing required key"),
    "low_ge_high": (
        GOOD.replace("low = 1e-4, high = 1e-1", "low = 1e-1, high = 1e-4"),
        16, "nuisance.learning_rate", "must be below high"),
    "log_low_nonpositive": (
        GOOD.replace("low = 1e-6, high = 1e-2", "low = 0.0, high = 1e-2"),
        17, "nuisance.weight_decay", "log scale needs low > 0"),
    "empty_values": (GOOD.replace('["relu", "tanh"]', "[]"), 19, "scientific.activation", "non-empty"),
    "two_roles": (
        GOOD.replace('batch_size = 64', 'batch_size = 64\nlearning_rate = 0.01'),
        17, "nuisance.learning_rate", "both fixed and nuisance"),
    "workload_unresolved": (
        GOOD.replace("builtin:digits-mlp", "builtin:nope"),
        3, "study.workload", "unknown built-in workload"),
    "python_workload_missing": (
        GOOD.replace("builtin:digits-mlp", "no_such_pkg.train:main"),
        3, "study.workload", "cannot find"),
    "command_missing": (
        GOOD.replace('"builtin:digits-mlp"', '{ command = ["/no/such/exe"] }'),
        3, "study.workload.command", "not an executable"),
    "hp_not_accepted": (
        GOOD.replace("batch_size = 64", "batch_size = 64\nfrobnicate = 3"),
        15, "fixed.frobnicate", "does not accept"),
    "bad_toml": (GOOD.replace("budget = 16", "budget = = 16"), 9, "toml", "invalid TOML"),
    "nonfinite": (GOOD.replace("high = 1e-1", "high = inf"), 16, "nuisance.learning_rate", "non-finite"),
    "nan_fixed": (GOOD.replace("batch_size = 64", "batch_size = nan"), 14, "fixed.batch_size", "non-finite"),
    "budget_zero": (GOOD.replace("budget = 16", "budget = 0"), 9, "study.budget", "at least 1"),
    "budget_bool": (GOOD.replace("budget = 16", "budget = true"), 9, "study.budget", "integer"),
    "bad_scale": (
        GOOD.replace('scale = "log" }\nweight', 'scale = "logarithmic" }\nweight'),
        16, "nuisance.learning_rate", "scale must be one of"),
    "bad_choice_value": (
        GOOD.replace('optimizer = "adam"', 'optimizer = "lbfgs"'),
        13, "fixed.optimizer", "must be one of"),
    "bad_mode": (GOOD.replace('mode = "min"', 'mode = "lowest"'), 6, "study.mode", "must be one of"),
    "budget_below_values": (
        GOOD.replace("budget = 16", "budget = 1"),
        9, "study.budget", "fewer than the 2 scientific values"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_case_exits_2_with_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, line, key, reason = BAD_CASES[case]
    path = write(tmp_path, text)
    code, err = run_validate(path, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    where = f"{path}:{line}" if line else f"{path}"
    assert err.startswith(f"{where}: {key}: "), err
    assert reason in err
    assert "Traceback" not in err


def test_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_validate(tmp_path / "nope.toml", capsys)
    assert code == 2 and err == f"{tmp_path / 'nope.toml'}: no such file"


def test_console_script_gives_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("low = 1e-4, high = 1e-1", "low = 1, high = 1"))
    proc = subprocess.run(
        [sys.executable, "-m", "tuneplay_tui.launcher", "validate", str(path)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert re.fullmatch(rf"{re.escape(str(path))}:16: nuisance\.learning_rate: .*\n", proc.stderr)
    assert proc.stdout == ""


def test_python_workload_declared_hyperparameters(tmp_path: Path) -> None:
    (tmp_path / "mytrain.py").write_text(
        "import this_module_is_never_imported\n"
        "HYPERPARAMETERS = {'lr': 0.1, 'depth': 2}\n"
        "def train(hp, trial):\n    pass\n"
    )
    text = (
        '[study]\nname = "mine"\nworkload = "mytrain:train"\nmax_train_steps = 10\nbudget = 4\n'
        "[nuisance]\nlr = { low = 1e-3, high = 1.0, scale = \"log\" }\n"
    )
    spec = load_study(write(tmp_path, text))
    assert spec.workload == "mytrain:train"
    with pytest.raises(SpecError, match="does not accept"):
        load_study(write(tmp_path, text.replace("lr =", "momentum ="), "b.toml"))


def test_joint_mode_allows_scientific_range(tmp_path: Path) -> None:
    text = GOOD.replace('activation = { values = ["relu", "tanh"] }', "dropout = { low = 0.0, high = 0.5 }")
    with pytest.raises(SpecError, match="joint"):
        load_study(write(tmp_path, text))
    spec = load_study(write(tmp_path, text.replace('seed = 0', 'seed = 0\nscientific_mode = "joint"'), "j.toml"))
    assert spec.scientific_mode == "joint"


def test_a_byte_order_mark_is_accepted_and_other_encodings_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_study(bom).name == "digits-mlp-lr"
    latin = tmp_path / "latin.toml"
    latin.write_bytes(GOOD.replace('goal = "', 'goal = "caf\xe9 ').encode("latin-1"))
    code, err = run_validate(latin, capsys)
    assert code == 2
    line = next(i for i, ln in enumerate(GOOD.splitlines(), 1) if ln.startswith("goal"))
    assert err.startswith(f"{latin}:{line}: not UTF-8 text: byte 0xe9 at column ") and "save the file as UTF-8" in err


def test_default_experiment_names_come_from_the_module_not_the_function(tmp_path: Path) -> None:
    for module in ("raiser", "nometric"):
        (tmp_path / f"{module}.py").write_text("def train(hp, trial):\n    pass\n")
    text = '[study]\nname = "a"\nworkload = "{}:train"\nmax_train_steps = 5\nbudget = 1\n'
    names = {load_study(write(tmp_path, text.format(m), f"{m}.toml")).experiment for m in ("raiser", "nometric")}
    assert names == {"raiser", "nometric"}
