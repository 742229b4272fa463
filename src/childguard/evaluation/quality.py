"""`eval table`: the quality table of docs/quality.md, generated from MLflow evaluation runs.

Why generated: the table is where the team decides which configuration is the default, so every
number in it must be traceable to a logged run (run id in the first column) and none may be
typed by hand. The table reads only what `eval run` logged (params and metrics), so it works
on any run of the experiment, old or new, and says "n/a" where a run did not measure a column
(for example a run without the OpenAI moderation set).

Columns follow the quality issue: per configuration, sexual/minors AUPRC and recall on the
OpenAI moderation set, false positive rate on XSTest's safe prompts, recall and false positive
rate per category on our own set, review rate, judge call rate and p50 latency. "Recall" is the
share of violating items flagged (review or block) at the run's thresholds, which are the
calibrated ones when the policy has a calibration file.

Why a records file (`docs/quality_runs.jsonl`): an MLflow store lives on one machine, and a new
machine starts with an empty one, so a table built only from the store loses every
configuration measured before. `eval table --records FILE` copies the params and metrics of
each run it reads from the store into the file (one JSON line per run, replaced by run id) and
takes runs the store does not have from it, so the table in the repository keeps accumulating
configurations across machines and stays regenerable by one command. The file holds params and
metrics only: ids, names and numbers, never item text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SEXUAL_MINORS = "sexual_minors"

#: dataset families by the name their loader gives them (a split adds `:<split>`)
OPENAI = "openai_moderation"
XSTEST = "xstest"
OWN = "child_safety_v1"
#: our own sets, with the short label their columns carry
OWN_SETS = (("v1", OWN), ("v2", "child_safety_v2"))


@dataclass(frozen=True)
class RunRow:
    """What the table needs of one logged run."""

    run_id: str
    name: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]

    def to_json(self) -> dict[str, object]:
        # non-finite metrics (an undefined FPR) are not JSON: the table reads a missing key as n/a
        return {"run_id": self.run_id, "name": self.name,
                "params": dict(sorted(self.params.items())),
                "metrics": {k: float(v) for k, v in sorted(self.metrics.items())
                            if math.isfinite(float(v))}}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> RunRow:
        params, metrics = d.get("params", {}), d.get("metrics", {})
        if not (isinstance(d.get("run_id"), str) and isinstance(params, dict)
                and isinstance(metrics, dict)):
            raise ValueError("a run record needs run_id (string), params and metrics (objects)")
        return cls(run_id=str(d["run_id"]), name=str(d.get("name") or d["run_id"]),
                   params={str(k): str(v) for k, v in params.items()},
                   metrics={str(k): float(v) for k, v in metrics.items()})


def read_records(path: Path) -> list[RunRow]:
    """The run records of `path` in file order ([] when the file does not exist)."""
    if not path.exists():
        return []
    rows: list[RunRow] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(RunRow.from_json(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a run record ({exc})") from exc
    return rows


def find_record(records: Sequence[RunRow], ref: str) -> RunRow | None:
    """A record by run id, unique id prefix (8+ characters) or run name (the last one)."""
    for r in records:
        if r.run_id == ref:
            return r
    if len(ref) >= 8:
        hits = [r for r in records if r.run_id.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
    named = [r for r in records if r.name == ref]
    return named[-1] if named else None


def write_records(path: Path, records: Sequence[RunRow], new: Sequence[RunRow]) -> list[RunRow]:
    """`records` with each of `new` replacing the record of the same run id (or appended),
    written to `path` one sorted-key JSON line per run; returns what was written."""
    by_id = {r.run_id: r for r in new}
    merged = [by_id.pop(r.run_id, r) for r in records]
    merged += list(by_id.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in merged),
                    encoding="utf-8")
    return merged


def dataset_prefix(metrics: Mapping[str, float], family: str) -> str | None:
    """The metric prefix of the first set of `family` in a run (`xstest`,
    `openai_moderation:test`), or None when the run did not measure that family."""
    names = sorted({k.split(".", 1)[0] for k in metrics if k.endswith(".items")})
    # `openai_moderation_all` (every row, S3 unknown as negative) counts as the OpenAI family
    accepted = (family, *((f"{family}_all",) if family == OPENAI else ()))
    for fam in accepted:
        for name in names:
            if name == fam or name.startswith(fam + ":"):
                return name
    return None


def _get(metrics: Mapping[str, float], key: str | None) -> float | None:
    if key is None or key not in metrics:
        return None
    v = float(metrics[key])
    return v if math.isfinite(v) else None


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(metrics: Mapping[str, float], key: str | None, digits: int = 3) -> str:
    """`value [lo, hi]` with the run's bootstrap 95% interval when it logged one."""
    v = _get(metrics, key)
    if v is None or key is None:
        return "n/a"
    lo, hi = _bounds(metrics, key)
    if lo is None or hi is None:
        return _fmt(v, digits)
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _bounds(metrics: Mapping[str, float], key: str) -> tuple[float | None, float | None]:
    """The run's bootstrap 95% interval of metric `key` (`<key>_lo`, `<key>_hi`), if logged."""
    return _get(metrics, f"{key}_lo"), _get(metrics, f"{key}_hi")


def _own_codes(row: RunRow, prefix: str | None) -> list[str]:
    if prefix is None:
        return []
    codes = {k[len(prefix) + 1:].rsplit(".", 1)[0] for k in row.metrics
             if k.startswith(prefix + ".") and k.endswith(".recall")}
    # slice metrics (`slice.<kind>.any.recall`) have their own column
    return sorted(c for c in codes - {"any"} if "." not in c)


def describe_config(row: RunRow) -> str:
    """Judge, gate and probes of a run, from its params (short, for a table cell)."""
    p = row.params
    judge = p.get("judge_backend", "?")
    if p.get("judge_model") and judge not in ("reference",):
        judge += f" {p['judge_model']}"
    if judge != "none":
        judge += f" ({p.get('judge_mode', '?')}, combine {p.get('judge_combine', 'judge_first')})"
    gate = (f"gate < {p.get('gate_allow_below', '?')}" if p.get("gate") == "True"
            else "no gate")
    probes = p.get("model.probes", "unavailable")
    probes = ("no probes" if probes == "unavailable"
              else f"probes {probes.removeprefix('probes:')}")
    if p.get("probe_context_messages"):
        probes += f" (context {p['probe_context_messages']})"
    if p.get("probe_heads") == "per_source":
        probes += " (per-source heads)"
    # the run applied <policy>/calibration.yaml if there was one; the thresholds it logged say
    # what was in force (a run with calibration on but no file used the policy's)
    calib = "calibration on" if p.get("calibration") == "True" else "policy thresholds"
    review, block = (p.get(f"threshold.{SEXUAL_MINORS}.review"),
                     p.get(f"threshold.{SEXUAL_MINORS}.block"))
    if review and block:
        calib += f" ({SEXUAL_MINORS} review {review}, block {block})"
    return f"{judge}; {gate}; {probes}; {calib}"


def quality_table(rows: Sequence[RunRow]) -> str:
    """A Markdown table, one line per run, in the order given."""
    own_codes = {fam: sorted({c for r in rows
                              for c in _own_codes(r, dataset_prefix(r.metrics, fam))})
                 for _, fam in OWN_SETS}
    head = ["run", "configuration", "OAI S3 AUPRC [95% CI]", "OAI S3 recall", "XSTest flagged"]
    for label, fam in OWN_SETS:
        head += [f"{label} violating recall / look-alikes flagged / look-alikes blocked"]
        head += [f"{label} {c} recall / FPR" for c in own_codes[fam]]
    head += ["v2 violating recall: plain / disguised (obfuscated, injection-wrapped)"]
    head += ["review rate", "judge call rate (OAI / XSTest / v1 / v2)",
             "p50 ms (all / without judge)", "error rate"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r.metrics
        oai = dataset_prefix(m, OPENAI)
        xs = dataset_prefix(m, XSTEST)
        cells = [f"{r.name} `{r.run_id[:8]}`", describe_config(r),
                 _ci(m, oai and f"{oai}.{SEXUAL_MINORS}.auprc"),
                 _ci(m, oai and f"{oai}.{SEXUAL_MINORS}.recall"),
                 # any category flagged: XSTest's safe prompts are negatives for every code
                 _ci(m, xs and f"{xs}.any.fpr")]
        for _, fam in OWN_SETS:
            own = dataset_prefix(m, fam)
            # any category: violating items flagged (review or block) / look-alikes flagged /
            # look-alikes blocked (flagged is what costs reviewers; blocked is what users see)
            cells.append(f"{_ci(m, own and f'{own}.any.recall', 2)} / "
                         f"{_ci(m, own and f'{own}.any.fpr', 2)} / "
                         f"{_fmt(_get(m, own and f'{own}.any.block_fpr'), 2)}")
            for c in own_codes[fam]:
                rec = _get(m, own and f"{own}.{c}.recall")
                fpr = _get(m, own and f"{own}.{c}.fpr")
                cells.append(f"{_fmt(rec, 2)} / {_fmt(fpr, 2)}")
        v2 = dataset_prefix(m, OWN_SETS[-1][1])
        cells.append(f"{_ci(m, v2 and f'{v2}.slice.plain.any.recall', 2)} / "
                     f"{_ci(m, v2 and f'{v2}.slice.disguised.any.recall', 2)}")
        p50, p50_cheap = _get(m, "latency_p50_ms"), _get(m, "latency_p50_unjudged_ms")
        per_set = " / ".join(
            _fmt(_get(m, pre and f"{pre}.judge_call_rate"), 2)
            for pre in (oai, xs, *(dataset_prefix(m, fam) for _, fam in OWN_SETS)))
        cells += [_fmt(_get(m, "review_rate")),
                  f"{_fmt(_get(m, 'judge_call_rate'))} ({per_set})",
                  " / ".join("n/a" if v is None else f"{v:.0f}" for v in (p50, p50_cheap)),
                  _fmt(_get(m, "error_rate"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- the README's summary block -------------------------------------------------------------

README_START = "<!-- quality-summary:start (generated by `childguard eval table ... --readme`) -->"
README_END = "<!-- quality-summary:end -->"


def _pct(metrics: Mapping[str, float], key: str | None, *, ci: bool = True) -> str:
    v = _get(metrics, key)
    if v is None:
        return "n/a"
    out = f"{100 * v:.1f}%"
    lo, hi = _bounds(metrics, key) if key else (None, None)
    if ci and lo is not None and hi is not None:
        out += f" [{100 * lo:.0f}, {100 * hi:.0f}]"
    return out


def summary_table(rows: Sequence[RunRow]) -> str:
    """The key figures of a few runs side by side (one column per run), for README: every
    cell read from a logged run, so README's claims can be regenerated, never typed."""
    head = ["test split", *(f"{r.name} `{r.run_id[:8]}`" for r in rows)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def line(label: str, cell: object) -> None:
        lines.append("| " + " | ".join([label, *(cell(r.metrics) for r in rows)]) + " |")  # type: ignore[operator]

    def pre(m: Mapping[str, float], fam: str) -> str | None:
        return dataset_prefix(m, fam)

    v2 = OWN_SETS[-1][1]
    line("XSTest safe prompts flagged", lambda m: _pct(m, (x := pre(m, XSTEST)) and f"{x}.any.fpr"))
    line("child_safety_v2: violating flagged",
         lambda m: _pct(m, (p := pre(m, v2)) and f"{p}.any.recall"))
    line("child_safety_v2: look-alikes flagged / blocked",
         lambda m: f"{_pct(m, (p := pre(m, v2)) and f'{p}.any.fpr')} / "
                   f"{_pct(m, p and f'{p}.any.block_fpr', ci=False)}")
    line("child_safety_v2 recall: grooming / sextortion / endangerment",
         lambda m: " / ".join(_fmt(_get(m, (p := pre(m, v2)) and f"{p}.{c}.recall"), 2)
                              for c in ("grooming", "sextortion", "endangerment")))
    line("child_safety_v2 violating flagged: plain / disguised",
         lambda m: f"{_pct(m, (p := pre(m, v2)) and f'{p}.slice.plain.any.recall', ci=False)}"
                   f" / {_pct(m, p and f'{p}.slice.disguised.any.recall', ci=False)}")
    line("OpenAI moderation test half: sexual/minors AUPRC",
         lambda m: _ci(m, (o := pre(m, OPENAI)) and f"{o}.{SEXUAL_MINORS}.auprc"))
    line("child_safety_v1: violating flagged / look-alikes flagged",
         lambda m: f"{_pct(m, (p := pre(m, OWN)) and f'{p}.any.recall', ci=False)} / "
                   f"{_pct(m, p and f'{p}.any.fpr', ci=False)}")
    line("p50 latency in process: all / items the judge did not see",
         lambda m: " / ".join("n/a" if v is None else f"{v:.0f} ms" for v in
                              (_get(m, "latency_p50_ms"), _get(m, "latency_p50_unjudged_ms"))))
    line("p50 in process, items the judge did not see: v2 / XSTest / OAI",
         lambda m: " / ".join(
             "n/a" if (v := _get(m, (p := pre(m, f)) and f"{p}.latency_p50_unjudged_ms")) is None
             else f"{v:.0f} ms" for f in (v2, XSTEST, OPENAI)))
    line("judge call rate: v2 / XSTest / OAI",
         lambda m: " / ".join(_fmt(_get(m, (p := pre(m, f)) and f"{p}.judge_call_rate"), 2)
                              for f in (v2, XSTEST, OPENAI)))
    return "\n".join(lines) + "\n"


def replace_readme_block(text: str, block: str, command: str) -> str:
    """`text` with the summary block between the markers replaced (the markers must exist)."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the file has no summary block: add the two lines {README_START!r} "
                         f"and {README_END!r} where the table goes")
    body = f"{README_START}\n{block}\nRegenerate: `{command}`\n"
    return text[:start] + body + text[end:]
