"""Transparency and CyberTipline reports, computed from the store (ids, hashes, decisions).

Why: a platform publishes how much it classified, what it decided, how much was automated and
how fast humans reviewed; and for each confirmed case it needs the facts a CyberTipline report
asks for. Both are derived from what the store already keeps (verdict rows, review decisions,
item hashes), never from content, and nothing is sent anywhere: the cybertip export is a file
for a trained human to check and file by hand.

The store API used: `Store.iter_verdict_rows(since)` (kind model|review, decision, report,
created_at, verdict), `item_info`, `get_model_verdict`, `get_verdict`, `review_history`.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from childguard.errors import NotFound, UserError
from childguard.schema import Decision, ReviewDecision, Verdict


class ReportStore(Protocol):
    def iter_verdict_rows(self, since: datetime | None = None) -> Iterable[dict[str, Any]]: ...


def _aware(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _top_flagged(verdict: Mapping[str, Any]) -> str:
    cats = [c for c in verdict.get("categories", []) if c.get("decision") != Decision.ALLOW.value]
    if not cats:
        return "none"
    return str(max(cats, key=lambda c: c.get("score", 0.0))["code"])


@dataclass
class _ItemFacts:
    model_at: datetime
    model_decision: str
    model_category: str
    model_report: bool
    review_at: datetime | None = None
    review_decision: str | None = None
    review_category: str | None = None
    review_report: bool = False


def transparency(store: ReportStore, start: datetime, end: datetime, *,
                 now: datetime | None = None) -> dict[str, Any]:
    """Counts for items first classified in [start, end) (reviews counted whenever they came).

    - decisions_by_category: final decision (review overrides model) x top flagged category
    - automated vs human: items whose final decision is the model's vs a reviewer's
    - review SLA: hours from the model verdict to the first reviewer decision, for items the
      model sent to review (pending ones counted and aged at min(now, `end`): a window that
      ends in the future does not age an item past the present)
    - overturn rate: reviewed items whose model decision was allow or block and the reviewer
      decided otherwise (review is not a decision, so review->x is not an overturn)
    """
    start, end = _aware(start), _aware(end)
    aged_at = min(end, _aware(now) if now is not None else datetime.now(UTC))
    if not start < end:
        raise UserError(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    facts: dict[str, _ItemFacts] = {}
    for row in store.iter_verdict_rows(since=start):
        at = _aware(row["created_at"])
        v = row["verdict"]
        if row["kind"] == "model":
            if at >= end or row["item_id"] in facts:
                continue  # first model verdict in the window counts
            facts[row["item_id"]] = _ItemFacts(at, row["decision"], _top_flagged(v),
                                               bool(row["report"]))
        elif row["kind"] == "review" and row["item_id"] in facts:
            f = facts[row["item_id"]]
            if f.review_at is None:
                f.review_at = at
            f.review_decision = row["decision"]
            f.review_category = _top_flagged(v)
            f.review_report = bool(row["report"])
    n = len(facts)
    by_cat: dict[str, Counter[str]] = {}
    human = 0
    sla_hours: list[float] = []
    pending_hours: list[float] = []
    overturn_base = overturned = 0
    reports_due = 0
    for f in facts.values():
        final = f.review_decision or f.model_decision
        cat = (f.review_category if f.review_decision else f.model_category) or "none"
        by_cat.setdefault(cat, Counter())[final] += 1
        human += f.review_decision is not None
        reports_due += bool(f.review_report)
        if f.model_decision == Decision.REVIEW.value:
            if f.review_at is not None:
                sla_hours.append((f.review_at - f.model_at).total_seconds() / 3600)
            else:
                pending_hours.append(max(0.0, (aged_at - f.model_at).total_seconds() / 3600))
        if f.review_decision is not None and f.model_decision != Decision.REVIEW.value:
            overturn_base += 1
            overturned += f.review_decision != f.model_decision
    decisions = Counter(f.review_decision or f.model_decision for f in facts.values())
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "items_classified": n,
        "decisions": {d.value: decisions.get(d.value, 0) for d in Decision},
        "decisions_by_category": {c: {d.value: cnt.get(d.value, 0) for d in Decision}
                                  for c, cnt in sorted(by_cat.items())},
        "automated": n - human,
        "human": human,
        "automated_share": (n - human) / n if n else None,
        "human_share": human / n if n else None,
        "sent_to_review": len(sla_hours) + len(pending_hours),
        "review_sla_hours": {
            "reviewed": len(sla_hours),
            "pending": len(pending_hours),
            "p50": _pct(sla_hours, 50), "p90": _pct(sla_hours, 90),
            "max": max(sla_hours) if sla_hours else None,
            "oldest_pending": max(pending_hours) if pending_hours else None,
        },
        "overturn": {"eligible": overturn_base, "overturned": overturned,
                     "rate": overturned / overturn_base if overturn_base else None},
        "reports_confirmed_by_reviewers": reports_due,
    }


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def transparency_rows(report: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """(section, key, value) rows: the CSV form and the basis of the markdown tables."""
    rows: list[tuple[str, str, Any]] = [
        ("window", "from", report["from"]), ("window", "to", report["to"]),
        ("totals", "items_classified", report["items_classified"]),
    ]
    rows += [("decisions", k, v) for k, v in report["decisions"].items()]
    for cat, ds in report["decisions_by_category"].items():
        rows += [("decisions_by_category", f"{cat}.{d}", v) for d, v in ds.items()]
    for k in ("automated", "human", "automated_share", "human_share", "sent_to_review"):
        rows.append(("automation", k, report[k]))
    rows += [("review_sla_hours", k, v) for k, v in report["review_sla_hours"].items()]
    rows += [("overturn", k, v) for k, v in report["overturn"].items()]
    rows.append(("reports", "confirmed_by_reviewers", report["reports_confirmed_by_reviewers"]))
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_transparency(report: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=False)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["section", "key", "value"])
        for r in transparency_rows(report):
            w.writerow([r[0], r[1], "" if r[2] is None else r[2]])
        return buf.getvalue()
    if fmt == "md":
        lines = [f"# Transparency report {report['from']} to {report['to']}", "",
                 f"Items classified: {report['items_classified']}", "",
                 "| category | allow | review | block |", "|---|---:|---:|---:|"]
        for cat, ds in report["decisions_by_category"].items():
            lines.append(f"| {cat} | {ds['allow']} | {ds['review']} | {ds['block']} |")
        lines += ["", "| measure | value |", "|---|---:|"]
        for section, key, v in transparency_rows(report):
            if section in ("automation", "review_sla_hours", "overturn", "reports"):
                lines.append(f"| {section}.{key} | {_fmt(v)} |")
        return "\n".join(lines) + "\n"
    raise UserError(f"--format {fmt!r} is not supported; use csv, json or md")


# -- CyberTipline export ------------------------------------------------------------------------

#: policy category -> CyberTipline incident type (NCMEC's categories), for the human filer
INCIDENT_TYPES: dict[str, str] = {
    "sexual_minors": "Child Pornography (possession, manufacture, and distribution)",
    "abuse_material_trade": "Child Pornography (possession, manufacture, and distribution) "
                            "and/or Child Sex Trafficking (the filer decides which applies)",
    "grooming": "Online Enticement of Children for Sexual Acts",
    "sextortion": "Online Enticement of Children for Sexual Acts (sextortion)",
}


def cybertip(store: Any, item_id: str) -> dict[str, Any]:
    """The fields a CyberTipline report needs, for a human to verify and file. Sends nothing.

    `ready_to_file` is true only when a human reviewer escalated the item (or blocked it in a
    reportable category): the policy files after human confirmation, never on a model score.
    """
    info = store.item_info(item_id)  # raises NotFound
    model: Verdict | None = store.get_model_verdict(item_id)
    final: Verdict | None = store.get_verdict(item_id)
    history: list[ReviewDecision] = store.review_history(item_id)
    if model is None and final is None:
        raise NotFound(f"item {item_id!r} has no verdict in the store")
    last = history[-1] if history else None
    categories = list(last.categories) if last else []
    if not categories and final is not None:
        categories = [c.code for c in final.categories if c.decision is not Decision.ALLOW]
    reportable = [c for c in categories if c in INCIDENT_TYPES]
    confirmed = last is not None and (last.report or (last.decision is Decision.BLOCK
                                                      and bool(reportable)))
    reasons = []
    if last is None:
        reasons.append("no human reviewer decision yet: a report is filed after confirmation")
    elif not confirmed:
        reasons.append(f"the reviewer's decision was {last.outcome.value} without a reportable "
                       "category")
    return {
        "format": "childguard.cybertip.v1",
        "generated_at": datetime.now(UTC).isoformat(),
        "sent": False,
        "note": "Prepared for a trained human to verify and file with the NCMEC CyberTipline; "
                "childguard sends nothing. Attach the preserved media from the restricted "
                "media area, not from this file.",
        "ready_to_file": confirmed,
        "not_ready_reasons": reasons,
        "incident": {
            "incident_types": sorted({INCIDENT_TYPES[c] for c in reportable}),
            "policy_categories": categories,
            "escalated_by_reviewer": bool(last and last.report),
        },
        "item": {
            "item_id": info.item_id,
            "external_id": info.external_id,
            "source": info.source,
            "first_seen": info.created_at.isoformat(),
            "content_hashes": dict(info.hashes),
            "media_id": info.media_id,
        },
        "automated_classification": None if model is None else {
            "decision": model.decision.value,
            "status": model.status.value,
            "classified_at": model.created_at.isoformat(),
            "categories": [{"code": c.code, "score": c.score, "decision": c.decision.value}
                           for c in model.categories],
            "hash_matches": [{"bank": m.bank, "signal_type": m.signal_type,
                              "distance": m.distance, "category": m.category}
                             for m in model.hash_matches],
            "policy_id": model.policy_id,
            "policy_version": model.policy_version,
            "model_versions": dict(model.model_versions),
        },
        "reviewer_classification": None if last is None else {
            "outcome": last.outcome.value,
            "categories": list(last.categories),
            "reviewer": last.reviewer,
            "decided_at": last.decided_at.isoformat(),
            "revision": last.revision,
            "has_comment": bool(last.comment),
        },
        "review_history": [{"revision": d.revision, "outcome": d.outcome.value,
                            "categories": list(d.categories), "reviewer": d.reviewer,
                            "decided_at": d.decided_at.isoformat()} for d in history],
    }
