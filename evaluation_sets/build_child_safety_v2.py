"""Build `child_safety_v2.jsonl` from the hand-written parts in `v2_parts/`.

Why a second set: `child_safety_v1` carries label cues (every row with context is violating,
every third-person abstract description is violating, 'sexu*' words mark two categories), so its
test split rewards the cues. v2 is written as real messages (DMs, game chat, ads, comments,
texts; several lengths; slang; ages stated or implied), with context, obfuscation, injection
wrappers and alarming words on BOTH sides (`tests/unit/evaluation/test_eval_own_set_v2.py`
checks that those surface features alone cannot separate the classes).

Parts: `train_*.jsonl` were written by helper sessions from the policy and written guidelines;
`test.jsonl` was written by a separate helper given only the policy text (never the train
items), so the test split measures generalisation. This script validates every line, keeps
the parts' ids, and moves a deterministic quarter of the train groups (by sha256 of the group)
to `calib`, the split thresholds and stackers are fitted on. A part written as `calib` stays
whole in calib (`calib_*.jsonl`: another author's items, so calib measures generalisation to
an author the encoder never trained on, as the test split does). Safety: nothing in the parts is
sexual; violating items show the behaviour (secrecy, private apps, meetings, threats over
photos, dares), never sexual content. The sexual categories (sexual_minors,
sexualised_commentary, abuse_material_trade) have benign look-alikes here but no violating
items: the helper asked to write them declined, the few another helper wrote were removed, and
the build refuses any (`NOT_AUTHORED`). Positives for those categories come from labelled
public sets referenced by id (the OpenAI moderation set for sexual_minors), or from a source
handled under proper authority; they are not invented here.

Run `python evaluation_sets/build_child_safety_v2.py`; the output is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

HERE = Path(__file__).parent
PARTS = HERE / "v2_parts"
OUT = HERE / "child_safety_v2.jsonl"
CODES = ("sexual_minors", "grooming", "sextortion", "sexualised_commentary",
         "abuse_material_trade", "endangerment")
FIELDS = {"id", "text", "context", "labels", "violating", "pattern", "register", "obfuscation",
          "group", "split"}
CALIB_SHARE = 0.25
#: categories whose violating text is sexual in the real world: never written into this set
NOT_AUTHORED = ("sexual_minors", "sexualised_commentary", "abuse_material_trade")


def _check(row: dict, where: str) -> None:
    missing = {"id", "text", "labels", "violating", "split"} - set(row)
    if missing:
        raise SystemExit(f"{where}: missing {sorted(missing)}")
    extra = set(row) - FIELDS
    if extra:
        raise SystemExit(f"{where}: unknown fields {sorted(extra)}")
    labels = row["labels"]
    if not isinstance(labels, dict) or set(labels) - set(CODES):
        raise SystemExit(f"{where}: labels must map category codes to 0/1")
    if row["violating"] != any(v == 1 for v in labels.values()):
        raise SystemExit(f"{where}: `violating` disagrees with the labels")
    if not row["violating"] and set(labels) != set(CODES):
        raise SystemExit(f"{where}: a look-alike must be a known negative for every code")
    authored = [c for c in NOT_AUTHORED if labels.get(c) == 1]
    if authored:
        raise SystemExit(f"{where}: violating items for {authored} are not written into this "
                         "set (see the module docstring)")
    if row["split"] not in ("train", "calib", "test"):
        raise SystemExit(f"{where}: parts carry split train, calib or test")
    if not str(row["text"]).strip():
        raise SystemExit(f"{where}: empty text")


_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")
_LONE_I = re.compile(r"\bi\b")


def _restyle(text: str, item_id: str) -> str:
    """The casing a phone or keyboard would give, chosen by hash for items on BOTH sides: 40%
    all lowercase, 30% sentence case (autocapitalised starts, "I"), 30% as written.

    Why: the helpers typed violating messages in lowercase far more often than look-alikes
    (91% vs 72% of DMs; 69% vs 16% of forum posts), which made casing a label cue. Casing
    carries no meaning here, so a style mixture drawn the same way for both sides removes it."""
    pick = int(hashlib.sha256(f"cs2-case:{item_id}".encode()).hexdigest()[:8], 16) % 10
    if pick < 4:
        return text.lower()
    if pick < 7:
        text = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)
        return _LONE_I.sub("I", text)
    return text


def _calib(group: str) -> bool:
    return int(hashlib.sha256(f"cs2-calib:{group}".encode()).hexdigest()[:8], 16) \
        < CALIB_SHARE * 0x100000000


def build() -> list[dict]:
    rows: list[dict] = []
    seen: set[str] = set()
    for part in sorted(PARTS.glob("*.jsonl")):
        for n, line in enumerate(part.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            _check(row, f"{part.name}:{n}")
            if row["id"] in seen:
                raise SystemExit(f"{part.name}:{n}: duplicate id {row['id']}")
            seen.add(row["id"])
            if row["violating"]:
                # a violating item is a known negative for no other code: unknown, not 0
                row["labels"] = {k: v for k, v in row["labels"].items() if v == 1}
            row["text"] = _restyle(str(row["text"]), str(row["id"]))
            row.setdefault("context", [])
            row.setdefault("group", row["id"])
            if row["split"] == "train" and _calib(str(row["group"])):
                row["split"] = "calib"
            rows.append(row)
    rows.sort(key=lambda r: r["id"])
    return rows


def main() -> None:
    rows = build()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                           for r in rows), encoding="utf-8")
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        cat = next((k for k, v in r["labels"].items() if v == 1), "benign")
        counts[(r["split"], cat)] = counts.get((r["split"], cat), 0) + 1
    print(f"wrote {OUT} ({len(rows)} items, sha256 "
          f"{hashlib.sha256(OUT.read_bytes()).hexdigest()[:16]})")
    for k in sorted(counts):
        print(f"  {k[0]:<6} {k[1]:<22} {counts[k]}")


if __name__ == "__main__":
    main()
