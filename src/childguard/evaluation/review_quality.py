"""Where the model and the reviewers disagree: overturns, confusion, agreement, SLA.

Why: the reviewers' decisions are the ground truth the product learns from, and the first thing
an ML engineer or a T&S lead asks of them is where the model was wrong (overturn rate per
category and severity, the model-vs-reviewer confusion), whether reviewers agree with each
other where two saw one item, and whether the queue meets its deadlines. Computed from the
store's ids, decisions and verdicts only (no content), for `childguard report review-quality`
and for the MLflow run of each `reviewed` snapshot (metrics + plots as artifacts).

Definitions (per reviewed item, its latest decision):
- the model's category is its highest-scoring category it did not allow ("none" if it allowed
  every category); the item's severity is `review_bridge.worker.item_severity`;
- overturned: the reviewer allowed an item the model flagged (review or block), blocked one
  the model allowed, or confirmed none of the categories the model flagged;
- confusion: model decision (allow / review / block) x reviewer decision (allow / block;
  escalate counts as block), and per category model-flagged x reviewer-labelled;
- agreement: items decided by two or more distinct reviewers; a pair agrees when both allow,
  or both block with the same categories (each reviewer's latest decision);
- SLA: the first decision within `review.sla_hours[severity]` of the model verdict; items the
  model sent to review and nobody decided yet count as pending, overdue past their deadline.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

from childguard.policy import Policy
from childguard.schema import Decision, ReviewDecision, ReviewOutcome, Verdict
from childguard.settings import ReviewSettings
from childguard.store.models import utc as _aware


def _flagged(verdict: Verdict) -> list[str]:
    cats = sorted((c for c in verdict.categories if c.decision is not Decision.ALLOW),
                  key=lambda c: -c.score)
    return [c.code for c in cats]


def _agree(a: ReviewDecision, b: ReviewDecision) -> bool:
    if a.outcome.decision is not b.outcome.decision:
        return False
    return a.outcome is ReviewOutcome.ALLOW or set(a.categories) == set(b.categories)


def review_quality(store: Any, policy: Policy, review: ReviewSettings, *,
                   now: datetime | None = None, since: datetime | None = None
                   ) -> dict[str, Any]:
    """The report as a dict of counts and rates (no content; item ids only in `overturned`)."""
    from childguard.review_bridge.worker import item_severity, sla_due

    now = _aware(now) if now is not None else datetime.now(UTC)
    codes = list(policy.spec.codes)
    confusion: Counter[tuple[str, str]] = Counter()
    per_cat: dict[str, Counter[str]] = {c: Counter() for c in codes}
    over_cat: dict[str, Counter[str]] = {}
    over_sev: dict[str, Counter[str]] = {}
    sla: dict[str, Counter[str]] = {}
    pairs = agreeing = multi = 0
    overturned_ids: list[str] = []
    reviewed = store.reviewed_item_ids(since=since)
    for item_id in reviewed:
        history = store.review_history(item_id)
        model = store.get_model_verdict(item_id)
        if not history or model is None:
            continue
        ordered = sorted(history, key=lambda d: (_aware(d.decided_at), d.revision))
        first, final = ordered[0], ordered[-1]
        flagged = _flagged(model)
        top = flagged[0] if flagged else "none"
        sev = item_severity(model, policy)
        severity = sev.value
        human = final.outcome.decision.value
        confusion[(model.decision.value, human)] += 1
        chosen = set(final.categories) if final.outcome is not ReviewOutcome.ALLOW else set()
        for c in codes:
            key = (("flagged" if c in flagged else "not_flagged") + "/"
                   + ("labelled" if c in chosen else "not_labelled"))
            per_cat[c][key] += 1
        model_flags = model.decision is not Decision.ALLOW
        over = ((model_flags and final.outcome is ReviewOutcome.ALLOW)
                or (not model_flags and final.outcome is not ReviewOutcome.ALLOW)
                or (model_flags and bool(flagged) and bool(final.categories)
                    and not chosen & set(flagged)))
        for table, key in ((over_cat, top), (over_sev, severity)):
            table.setdefault(key, Counter())["items"] += 1
            table[key]["overturned"] += int(over)
        if over:
            overturned_ids.append(item_id)
        due = sla_due(sev, _aware(model.created_at), review)
        sla.setdefault(severity, Counter())["decided"] += 1
        sla[severity]["within_sla"] += int(_aware(first.decided_at) <= due)
        latest_by: dict[str, ReviewDecision] = {d.reviewer: d for d in ordered}
        if len(latest_by) >= 2:
            multi += 1
            for a, b in combinations(latest_by.values(), 2):
                pairs += 1
                agreeing += int(_agree(a, b))
    seen = set(reviewed)
    for row in store.iter_verdict_rows(since=since):
        if (row["kind"] != "model" or row["decision"] != Decision.REVIEW.value
                or row["item_id"] in seen):
            continue
        seen.add(row["item_id"])
        verdict = Verdict.model_validate(row["verdict"])
        sev = item_severity(verdict, policy)
        sla.setdefault(sev.value, Counter())["pending"] += 1
        if now > sla_due(sev, _aware(verdict.created_at), review):
            sla[sev.value]["pending_overdue"] += 1

    def rates(table: dict[str, Counter[str]]) -> dict[str, dict[str, Any]]:
        return {k: {"items": v["items"], "overturned": v["overturned"],
                    "rate": v["overturned"] / v["items"] if v["items"] else None}
                for k, v in sorted(table.items())}

    n = sum(confusion.values())
    return {
        "generated_at": now.isoformat(),
        "since": since.isoformat() if since else None,
        "reviewed_items": n,
        "overturned": len(overturned_ids),
        "overturn_rate": len(overturned_ids) / n if n else None,
        "overturn_by_category": rates(over_cat),
        "overturn_by_severity": rates(over_sev),
        "confusion": {m.value: {h: confusion.get((m.value, h), 0)
                                for h in (Decision.ALLOW.value, Decision.BLOCK.value)}
                      for m in Decision},
        "per_category": {c: dict(per_cat[c]) for c in codes},
        "agreement": {"items_with_two_or_more_reviewers": multi, "pairs": pairs,
                      "agreeing_pairs": agreeing,
                      "rate": agreeing / pairs if pairs else None},
        "sla": {k: {"decided": v["decided"], "within_sla": v["within_sla"],
                    "attainment": v["within_sla"] / v["decided"] if v["decided"] else None,
                    "pending": v["pending"], "pending_overdue": v["pending_overdue"]}
                for k, v in sorted(sla.items())},
        "overturned_item_ids": overturned_ids,
    }


def metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat MLflow metric names."""
    out: dict[str, float] = {"review_quality.reviewed_items": report["reviewed_items"]}
    if report["overturn_rate"] is not None:
        out["review_quality.overturn_rate"] = report["overturn_rate"]
    for group in ("overturn_by_category", "overturn_by_severity"):
        for k, v in report[group].items():
            if v["rate"] is not None:
                out[f"review_quality.{group}.{k}"] = v["rate"]
    if report["agreement"]["rate"] is not None:
        out["review_quality.agreement_rate"] = report["agreement"]["rate"]
    for k, v in report["sla"].items():
        if v["attainment"] is not None:
            out[f"review_quality.sla_attainment.{k}"] = v["attainment"]
        out[f"review_quality.pending_overdue.{k}"] = v["pending_overdue"]
    return out


def plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """The confusion matrix and the overturn rate per category as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    rows = list(report["confusion"])
    cols = ["allow", "block"]
    grid = [[report["confusion"][r][c] for c in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(len(cols)), [f"reviewer {c}" for c in cols])
    ax.set_yticks(range(len(rows)), [f"model {r}" for r in rows])
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center")
    ax.set_title("model vs reviewer")
    fig.tight_layout()
    paths.append(out_dir / "review_confusion.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    cats = report["overturn_by_category"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = list(cats)
    ax.bar(names, [cats[k]["rate"] or 0.0 for k in names])
    ax.set_ylim(0, 1)
    ax.set_ylabel("overturn rate")
    ax.set_title("overturns by the model's category")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    paths.append(out_dir / "review_overturn_by_category.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def format_review_quality(report: dict[str, Any]) -> str:
    """Markdown for the terminal or a file."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    lines = [f"# Review quality ({report['reviewed_items']} reviewed items"
             + (f" since {report['since']}" if report["since"] else "") + ")", "",
             f"Overturned: {report['overturned']} ({pct(report['overturn_rate'])})", "",
             "| model \\ reviewer | allow | block |", "|---|---|---|"]
    for m, row in report["confusion"].items():
        lines.append(f"| {m} | {row['allow']} | {row['block']} |")
    for title, group in (("category", "overturn_by_category"),
                         ("severity", "overturn_by_severity")):
        lines += ["", f"| {title} | items | overturned | rate |", "|---|---|---|---|"]
        for k, v in report[group].items():
            lines.append(f"| {k} | {v['items']} | {v['overturned']} | {pct(v['rate'])} |")
    a = report["agreement"]
    lines += ["", f"Reviewer agreement: {a['agreeing_pairs']} of {a['pairs']} pairs "
              f"({pct(a['rate'])}) on {a['items_with_two_or_more_reviewers']} items seen by "
              "two or more reviewers", "",
              "| severity | decided | within SLA | attainment | pending | pending overdue |",
              "|---|---|---|---|---|---|"]
    for k, v in report["sla"].items():
        lines.append(f"| {k} | {v['decided']} | {v['within_sla']} | {pct(v['attainment'])} | "
                     f"{v['pending']} | {v['pending_overdue']} |")
    return "\n".join(lines) + "\n"

