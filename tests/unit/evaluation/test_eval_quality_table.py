"""The quality table is built from logged params and metrics only, and says n/a for gaps."""

from __future__ import annotations

from pathlib import Path

import pytest

from childguard.evaluation.quality import (
    RunRow,
    dataset_prefix,
    describe_config,
    find_record,
    quality_table,
    read_records,
    write_records,
)

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
    "child_safety_v1:test.any.fpr": 0.3,
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
    assert "v1 grooming recall / FPR" in lines[0] and "v1 any" not in lines[0]
    assert "v2 grooming" not in lines[0]  # no run measured v2: no per-category v2 columns
    first = lines[2]
    assert "`aaaaaaaa`" in first and "0.712" in first and "0.900" in first and "0.024" in first
    assert "0.75 / 0.05" in first and "| 2512 / n/a |" in first
    # the own set's acceptance cells: violating flagged / look-alikes flagged / blocked
    assert "v1 violating recall / look-alikes flagged / look-alikes blocked" in lines[0]
    assert "| 0.80 / 0.30 / 0.03 |" in first
    second = lines[3]
    assert second.count("n/a") >= 7  # nothing measured but an undefined FPR: all n/a
    assert "| 0.600 (n/a / n/a / n/a / n/a) |" in first  # judge call rate, per set when logged


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


def test_records_round_trip_replace_by_id_and_drop_non_finite(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "runs.jsonl"
    assert read_records(path) == []
    a, b = _run("aaaaaaaa1111", FULL), _run("bbbbbbbb2222", {"xstest.any.fpr": float("nan"),
                                                            "xstest.items": 3.0})
    write_records(path, [], [a, b])
    back = read_records(path)
    assert [r.run_id for r in back] == [a.run_id, b.run_id]
    assert back[0] == a  # params and metrics survive exactly
    assert "xstest.any.fpr" not in back[1].metrics  # NaN is not JSON: read back as n/a
    assert quality_table([back[1]]).count("n/a") == quality_table([b]).count("n/a")
    # a run measured again replaces its record in place; a new run is appended
    a2 = RunRow(run_id=a.run_id, name="renamed", params=a.params, metrics={"review_rate": 0.5})
    c = _run("cccccccc3333", FULL)
    merged = write_records(path, back, [c, a2])
    assert [r.run_id for r in merged] == [a.run_id, b.run_id, c.run_id]
    assert read_records(path)[0].name == "renamed"


def test_find_record_by_id_prefix_and_name(tmp_path: Path) -> None:
    recs = [_run("aaaaaaaa1111", FULL), _run("aaaaaaab2222", FULL), _run("cccccccc3333", FULL)]
    assert find_record(recs, "cccccccc3333") is recs[2]
    assert find_record(recs, "cccccccc") is recs[2]
    assert find_record(recs, "aaaaaaa") is None  # too short and ambiguous
    assert find_record(recs, "name-aaaaaaab2222") is recs[1]
    assert find_record(recs, "nothing") is None


def test_bad_record_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    path.write_text('{"run_id": "x", "params": {}, "metrics": {}}\n{"params": 1}\n')
    with pytest.raises(ValueError, match=r"runs.jsonl:2: not a run record"):
        read_records(path)


def test_cells_show_the_bootstrap_interval_when_the_run_logged_one() -> None:
    with_ci = {**FULL,
               "openai_moderation:test.sexual_minors.auprc_lo": 0.5,
               "openai_moderation:test.sexual_minors.auprc_hi": 0.85,
               "child_safety_v1:test.any.recall_lo": 0.61,
               "child_safety_v1:test.any.recall_hi": 0.93,
               "xstest.any.fpr_lo": 0.008}  # half an interval: shown without one
    row = quality_table([_run("cccccccc3333", with_ci)]).strip().splitlines()[2]
    assert "| 0.712 [0.500, 0.850] |" in row
    assert "| 0.80 [0.61, 0.93] / 0.30 / 0.03 |" in row
    assert "| 0.024 |" in row


def test_v2_columns_and_per_set_judge_call_rates() -> None:
    m = {**FULL, "child_safety_v2:test.items": 360.0, "child_safety_v2:test.any.recall": 0.9,
         "child_safety_v2:test.any.fpr": 0.04, "child_safety_v2:test.any.block_fpr": 0.0,
         "child_safety_v2:test.sextortion.recall": 0.85,
         "child_safety_v2:test.sextortion.fpr": 0.02,
         "openai_moderation:test.judge_call_rate": 0.25, "xstest.judge_call_rate": 0.04,
         "child_safety_v2:test.judge_call_rate": 0.5}
    lines = quality_table([_run("dddddddd4444", m)]).strip().splitlines()
    assert "v2 sextortion recall / FPR" in lines[0]
    row = lines[2]
    assert "| 0.90 / 0.04 / 0.00 |" in row and "| 0.85 / 0.02 |" in row
    assert "| 0.600 (0.25 / 0.04 / n/a / 0.50) |" in row


def test_readme_summary_block_is_generated_from_runs() -> None:
    from childguard.evaluation.quality import (
        README_END,
        README_START,
        replace_readme_block,
        summary_table,
    )

    a = _run("aaaaaaaa1", {"xstest.items": 250.0, "xstest.any.fpr": 0.116,
                           "xstest.any.fpr_lo": 0.08, "xstest.any.fpr_hi": 0.156,
                           "child_safety_v2:test.items": 360.0,
                           "child_safety_v2:test.any.recall": 0.942,
                           "child_safety_v2:test.grooming.recall": 0.875,
                           "child_safety_v2:test.judge_call_rate": 0.0,
                           "child_safety_v2:test.latency_p50_unjudged_ms": 55.4,
                           "xstest.latency_p50_unjudged_ms": 38.0})
    b = _run("bbbbbbbb2", {"xstest.items": 250.0, "xstest.any.fpr": 0.02})
    table = summary_table([a, b])
    assert "| test split | name-aaaaaaaa1 `aaaaaaaa` | name-bbbbbbbb2 `bbbbbbbb` |" in table
    assert "| XSTest safe prompts flagged | 11.6% [8, 16] | 2.0% |" in table
    assert "0.88 / n/a / n/a" in table  # grooming / sextortion / endangerment recall
    assert "| child_safety_v2: violating flagged | 94.2% | n/a |" in table
    assert ("| p50 in process, items the judge did not see: v2 / XSTest / OAI "
            "| 55 ms / 38 ms / n/a | n/a / n/a / n/a |") in table
    doc = f"intro\n{README_START}\nold table\n{README_END}\nafter\n"
    out = replace_readme_block(doc, table, "childguard eval table aaaaaaaa1 --readme README.md")
    assert out.startswith("intro\n") and out.endswith(f"{README_END}\nafter\n")
    assert "old table" not in out and "11.6%" in out and "Regenerate: `childguard eval" in out
    with pytest.raises(ValueError, match="no summary block"):
        replace_readme_block("no markers", table, "x")


def test_openai_all_rows_and_slices_in_the_table() -> None:
    m = {"openai_moderation_all:test.items": 417.0,
         "openai_moderation_all:test.sexual_minors.auprc": 0.49,
         "child_safety_v2:test.items": 360.0, "child_safety_v2:test.grooming.recall": 0.9,
         "child_safety_v2:test.slice.plain.any.recall": 0.96}
    assert dataset_prefix(m, "openai_moderation") == "openai_moderation_all:test"
    table = quality_table([_run("r1", m)])
    assert "0.490" in table
    assert "slice" not in table.splitlines()[0]  # no per-code column made of slice metrics
