"""The analysis and decision stages on a real study trained by the engine."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import ROOT, Project

pytestmark = pytest.mark.slow


def test_report_flags_a_too_low_learning_rate_then_reruns_decide(project: Project) -> None:
    study = project.path / "too-low.toml"
    shutil.copy(ROOT / "studies" / "digits-mlp-lr-too-low.toml", study)
    project.tuneplay("run", str(study), "--wait", "--cpu-slots", "2", check=True)

    data = json.loads(project.tuneplay("report", "digits-mlp-lr-too-low", "--format", "json", check=True).stdout)
    boundary = [f for f in data["findings"] if f["kind"] == "boundary" and f["subject"] == "learning_rate"]
    assert boundary and boundary[0]["severity"] == "warn"
    ev = boundary[0]["evidence"]
    assert ev["n_near_high"] >= 2 and ev["proposed_high"] > ev["high"] == pytest.approx(1e-3)
    assert not [f for f in data["findings"] if f["kind"] == "boundary" and f["subject"] == "momentum"]

    md = project.path / "report.md"
    text = project.tuneplay("report", "digits-mlp-lr-too-low", "--markdown", str(md), check=True).stdout
    assert f"Findings ({len(data['findings'])})" in text
    for f in data["findings"]:  # the text and the JSON agree finding for finding
        assert f"[{f['kind']}]" in text and f["message"].split(": ", 1)[-1][:60] in text
    assert "Axis plot: learning_rate" in text and "\x1b[" not in text
    assert md.read_text().startswith("# tuneplay report: digits-mlp-lr-too-low")

    out = project.tuneplay("rerun", "digits-mlp-lr-too-low", "--best", "1", "--seeds", "3", check=True).stdout
    assert "enqueued 6 reruns" in out
    early = project.tuneplay("decide", "digits-mlp-lr-too-low")
    if early.returncode != 0:  # reruns still running: a clear one-line refusal
        assert "still queued or running" in early.stderr and len(early.stderr.strip().splitlines()) == 1
    from tests.conftest import wait_until

    store = project.store()
    wait_until(lambda: all(t.state.is_finished() for t in store.list_trials()), timeout=120)
    verdict = project.tuneplay("decide", "digits-mlp-lr-too-low", "--format", "json", check=True)
    d = json.loads(verdict.stdout)
    assert d["verdict"] in ("adopt", "reject", "inconclusive") and d["reason"]
    assert d["comparison"]["n_candidate"] == 3 and d["comparison"]["n_baseline"] == 3
    assert "Welch" in d["comparison"]["test"] and "max_train_steps 200" in d["protocol"]
    again = json.loads(project.tuneplay("decide", "digits-mlp-lr-too-low", "--format", "json", check=True).stdout)
    assert again["decision_id"] == d["decision_id"]  # the same reruns are not recorded twice
    adopted = project.tuneplay("decide", "digits-mlp-lr-too-low", "--adopt", "--force", check=True).stdout
    assert "baseline v2 launched" in adopted
    status = project.tuneplay("status", check=True).stdout
    assert "baseline v2" in status and "latest decision: " + d["verdict"].upper() in status
    assert "digits-mlp-lr-too-low: 24/24 done · reruns 6/6 · " in status  # its budget of 24 stays whole


def test_probe_batch_measures_powers_of_two_and_recommends(project: Project) -> None:
    out = project.tuneplay("probe-batch", "builtin:digits-mlp", "--min-batch", "16", "--max-batch", "64",
                           "--format", "json", check=True).stdout
    data = json.loads(out)
    assert [p["batch_size"] for p in data["probes"]] == [16, 32, 64]
    assert all(p["examples_per_s"] > 0 and p["peak_mem_bytes"] > 0 for p in data["probes"])
    assert data["recommended"] in (16, 32, 64) and data["reason"]
    bad = project.tuneplay("probe-batch", "builtin:nope")
    assert bad.returncode == 2 and bad.stderr.startswith("tuneplay: builtin:nope: unknown built-in workload")


def test_export_parquet_round_trips(project: Project) -> None:
    pd = pytest.importorskip("pandas")
    study = project.write("q.toml", """\
[study]
name = "tiny"
workload = "builtin:digits-mlp"
max_train_steps = 20
eval_every = 10
budget = 2
[nuisance]
learning_rate = { low = 1e-3, high = 1e-2, scale = "log" }
""")
    project.tuneplay("run", str(study), "--wait", "--cpu-slots", "1", check=True)
    out = project.path / "t.parquet"
    project.tuneplay("export", "tiny", "--format", "parquet", "-o", str(out), check=True)
    df = pd.read_parquet(out)
    assert list(df["state"]) == ["COMPLETED", "COMPLETED"] and "learning_rate" in df.columns
    curves = project.path / "c.parquet"
    project.tuneplay("export", "tiny", "--curves", "--format", "parquet", "-o", str(curves), check=True)
    assert len(pd.read_parquet(curves)) == 2 * 3 * 3  # 2 trials x steps {0, 10, 19} x 3 metrics
