"""The quality table is built from logged params and metrics only, and says n/a for gaps."""

from __future__ import annotations

from childguard.evaluation.quality import RunRow, dataset_prefix, describe_config, quality_table

PARAMS = {"judge_backend": "llama_cpp", "judge_model": "qwen-1.5b", "judge_mode": "single",
          "gate": "True", "gate_allow_below": "0.05", "model.probes": "probes:minilm@abc",
          "calibration": "True"}


def _run(run_id: str, metrics: dict[str, float], params: dict[str, str] | None = None) -> RunRow:
    return RunRow(run_id=run_id, name=f"name-{run_id}", params=params or PARAMS, metrics=metrics)


FULL = {
    "openai_moderation:test.items": 243.0,
    "openai_moderation:test.sexual_minors.auprc": 0.71234,
    "openai_moderation:test.sexual_minors.recall": 0.9,
    "xstest.items": 250.0,
    "xstest.sexual_minors.fpr": 0.0,
    "xstest.any.fpr": 0.024,
    "child_safety_v1:test.items": 71.0,
    "child_safety_v1:test.grooming.recall": 0.75,
    "child_safety_v1:test.grooming.fpr": 0.05,
    "child_safety_v1:test.any.recall": 0.8,
    "child_safety_v1:test.any.block_fpr": 0.03,
    "review_rate": 0.3,
    "judge_call_rate": 0.6,
    "latency_p50_ms": 2512.4,
    "error_rate": 0.0,
}


def test_prefix_finds_split_sets() -> None:
    assert dataset_prefix(FULL, "openai_moderation") == "openai_moderation:test"
    assert dataset_prefix(FULL, "xstest") == "xstest"
    assert dataset_prefix(FULL, "xstest_all") is None
    assert dataset_prefix({"xstest_all.items": 1.0}, "xstest") is None


def test_table_rows_and_cells() -> None:
    sparse = {"xstest.items": 1.0, "xstest.any.fpr": float("nan")}
    table = quality_table([_run("aaaaaaaa1111", FULL), _run("bbbbbbbb2222", sparse)])
    lines = table.strip().splitlines()
    assert len(lines) == 4  # header, rule, two runs
    assert "own grooming recall / FPR" in lines[0] and "own any" not in lines[0]
    first = lines[2]
    assert "`aaaaaaaa`" in first and "0.712" in first and "0.900" in first and "0.024" in first
    assert "0.75 / 0.05" in first and "| 2512 |" in first
    # the own set's acceptance pair: violating items flagged / look-alikes blocked
    assert "own violating recall / benign blocked" in lines[0] and "| 0.80 / 0.03 |" in first
    second = lines[3]
    assert second.count("n/a") >= 7  # nothing measured but an undefined FPR: all n/a


def test_config_cell_says_judge_gate_probes_and_calibration() -> None:
    cell = describe_config(_run("x", FULL))
    assert cell == ("llama_cpp qwen-1.5b (single, combine judge_first); gate < 0.05; "
                    "probes minilm@abc; calibration on")
    newer = describe_config(_run("z", FULL, {**PARAMS, "judge_combine": "max",
                                             "probe_context_messages": "3",
                                             "threshold.sexual_minors.review": "0.127",
                                             "threshold.sexual_minors.block": "0.544"}))
    assert newer.endswith("calibration on (sexual_minors review 0.127, block 0.544)")
    assert "(single, combine max)" in newer and "probes minilm@abc (context 3)" in newer
    no_judge = describe_config(_run("n", FULL, {**PARAMS, "judge_backend": "none",
                                                "judge_model": ""}))
    assert no_judge.startswith("none; gate < 0.05")
    off = describe_config(_run("y", FULL, {**PARAMS, "gate": "False", "model.probes":
                                           "unavailable", "calibration": "False"}))
    assert off.endswith("no gate; no probes; policy thresholds")
