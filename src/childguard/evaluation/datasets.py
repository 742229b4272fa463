"""Evaluation sets: labelled items read from public sets, our own files and reviewer decisions.

Why one shape for all of them: every quality number the project reports comes from running the
same pipeline over an `EvalDataset`, so a reviewer-decision set, the OpenAI moderation dev half
and a hand-written JSONL file must be interchangeable. Labels are per policy category code and
three-valued: 1 (violates), 0 (does not), absent (unknown: the item is left out of that code's
metrics, never counted as a negative).

Each set has a content hash (sha256 over ids, texts, context and labels in a canonical form), so
an MLflow run names exactly the data it measured. What goes to MLflow is ids, labels and splits:
item text never leaves this module except into the pipeline.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from childguard.errors import NotFound, UserError
from childguard.schema import Message, ReviewDecision, ReviewOutcome

#: the category code the child-safety policy uses for sexual content involving minors
SEXUAL_MINORS = "sexual_minors"

#: splits we recognise in our own format (anything else is rejected with this list)
SPLITS = ("train", "dev", "test", "calib", "holdout")


def default_datasets_dir() -> Path:
    """`<repo>/../shared/datasets`, i.e. the shared folder next to the repository checkout."""
    # src/childguard/evaluation/datasets.py -> parents[3] is the repository root
    return (Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets").resolve()


@dataclass(frozen=True)
class EvalItem:
    """One labelled item. `labels` maps category code -> 0/1; a missing code means unknown."""

    id: str
    text: str | None
    labels: Mapping[str, int]
    context: tuple[Message, ...] = ()
    split: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)

    def label(self, code: str) -> int | None:
        return self.labels.get(code)

    @property
    def any_positive(self) -> int | None:
        """1 if any known label is 1, 0 if all known labels are 0, None if nothing is known."""
        if not self.labels:
            return None
        return int(any(v == 1 for v in self.labels.values()))


@dataclass(frozen=True)
class EvalDataset:
    """A named, content-hashed list of labelled items."""

    name: str
    items: tuple[EvalItem, ...]
    source: str
    description: str = ""

    @property
    def content_hash(self) -> str:
        return content_hash(self.items)

    @property
    def codes(self) -> tuple[str, ...]:
        """Category codes with at least one known label, sorted."""
        return tuple(sorted({c for it in self.items for c in it.labels}))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[EvalItem]:
        return iter(self.items)

    def limit(self, n: int | None) -> EvalDataset:
        """The first `n` items (a stable prefix, so two limited runs see the same ids)."""
        if n is None or n >= len(self.items):
            return self
        if n <= 0:
            raise UserError(f"--limit must be a positive number of items; received {n}")
        return EvalDataset(self.name, self.items[:n], self.source, self.description)

    def shard(self, k: int, n: int) -> EvalDataset:
        """Shard `k` of `n` (1-based): every n-th item from the k-th, a stable slice for
        filling the evaluation cache in chunks (`eval run --shard K/N`); named `set:shard-KofN`."""
        if n < 1 or not 1 <= k <= n:
            raise UserError(f"--shard K/N needs 1 <= K <= N; received {k}/{n}")
        if n == 1:
            return self
        return EvalDataset(f"{self.name}:shard-{k}of{n}", self.items[k - 1::n], self.source,
                           self.description)

    def split(self, *names: str) -> EvalDataset:
        """Only the items whose split is one of `names`; named `set:split` (`set:dev-test`), a
        form MLflow accepts in parameter and metric keys (brackets it rejects)."""
        kept = tuple(it for it in self.items if it.split in names)
        return EvalDataset(f"{self.name}:{'-'.join(names)}", kept, self.source, self.description)

    def only_codes(self, *codes: str) -> EvalDataset:
        """The items with only the labels of `codes` (the others become unknown; items left
        with no label are dropped); named `set:only-code1-code2`. For training a set only on
        the categories it labels well (`set.jsonl[train]{grooming,sextortion}`)."""
        unknown = sorted(set(codes) - set(self.codes))
        if unknown:
            raise UserError(f"{self.name} labels no {', '.join(unknown)}; it labels "
                            f"{', '.join(self.codes) or 'nothing'}")
        kept = tuple(replace(it, labels={c: v for c, v in it.labels.items() if c in codes})
                     for it in self.items if any(c in it.labels for c in codes))
        return EvalDataset(f"{self.name}:only-{'-'.join(codes)}", kept, self.source,
                           self.description)

    def summary(self) -> dict[str, Any]:
        """Counts only (safe to print and log): size, positives/negatives per code, splits."""
        per_code: dict[str, dict[str, int]] = {}
        for code in self.codes:
            known = [it.labels[code] for it in self.items if code in it.labels]
            per_code[code] = {"positive": sum(known), "negative": len(known) - sum(known)}
        splits: dict[str, int] = {}
        for it in self.items:
            key = it.split or "-"
            splits[key] = splits.get(key, 0) + 1
        return {
            "name": self.name,
            "items": len(self.items),
            "content_hash": self.content_hash,
            "source": self.source,
            "labels": per_code,
            "splits": splits,
        }


def content_hash(items: Iterable[EvalItem]) -> str:
    """sha256 (first 16 hex digits) over a canonical JSON form of the items, in order."""
    h = hashlib.sha256()
    for it in items:
        row = {
            "id": it.id,
            "text": it.text,
            "context": [[m.author, m.text] for m in it.context],
            "labels": dict(sorted(it.labels.items())),
            "split": it.split,
        }
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


# -- public sets ---------------------------------------------------------------------------

OPENAI_MODERATION_FILE = Path("openai_moderation") / "samples-dev.jsonl"
#: the categories that need a child in the message: an OpenAI row that is not sexual/minors and
#: names no child is a negative for them (see `load_openai_moderation`)
CHILD_SPECIFIC = ("grooming", "sextortion", "endangerment")
#: any word that might refer to a child or a young person; deliberately wide (girl, boy, young,
#: school, son...): a row it matches is left unlabelled for CHILD_SPECIFIC, never called negative
_MAYBE_CHILD = re.compile(
    r"\b(?:child\w*|kid\w*|minor\w*|under\s?age\w*|teen\w*|tween\w*|pre\s?teen\w*|boy\w*|"
    r"girl\w*|son|sons|daughter\w*|bab(?:y|ies)|toddler\w*|infant\w*|young\w*|youth\w*|"
    r"juvenile\w*|school\w*|student\w*|pupil\w*|class\s?mate\w*|niece\w*|nephew\w*|"
    r"grade|loli\w*|shota\w*|jail\s?bait|\d{1,2}\s?(?:yo|y/o|yrs?|years?)\b)",
    re.IGNORECASE)
XSTEST_FILE = Path("xstest") / "xstest_prompts.csv"


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise NotFound(
            f"{what} not found at {path}; the shared datasets live in <repo>/../shared/datasets "
            "(pass --datasets-dir to use another folder)"
        )
    return path


def load_openai_moderation(datasets_dir: Path | None = None, *,
                           unknown_negative: bool = False) -> EvalDataset:
    """The OpenAI moderation dev half: `S3` (sexual/minors) -> `sexual_minors`.

    Rows with `S3` unknown are left out (unknown is not negative). Rows flagged for other
    harms only (hate, violence, self-harm, adult sexual content) are negatives for child safety:
    exactly the look-alikes a child-safety classifier must not flag. A row that is not
    sexual/minors and names no child (no word of `_MAYBE_CHILD`, which is wide on purpose) is
    also a negative for the categories that need a child (`CHILD_SPECIFIC`: grooming,
    sextortion, endangerment): violence, threats or self-harm between adults are not child
    endangerment, which the probes otherwise learn only from our own sets, where every
    violent word comes with a child. Other codes stay unknown.
    Ids are `oai-<line number>` (1-based line of the file), stable across loads.

    Every item carries a split, `train` or `test` (see `_stratified_halves`), so probes can be
    trained on `openai_moderation[train]` and the pipeline measured on `openai_moderation[test]`
    without the probe having seen the items it is scored on.

    `unknown_negative=True` (the built-in `openai_moderation_all`) keeps the 348 rows whose S3
    is unknown, as negatives: almost all of them carry no sexual annotation at all (345 have S
    unknown too), and the held-out half this set comes from is scored that way (844 rows, 46
    positives). They are split in halves of their own, so every S3-known row keeps exactly
    the split it has in `openai_moderation` and runs on the two sets compare row for row.
    """
    root = datasets_dir or default_datasets_dir()
    path = _require(root / OPENAI_MODERATION_FILE, "OpenAI moderation dev half")
    items: list[EvalItem] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            s3 = row.get("S3")
            if s3 is None and not unknown_negative:
                continue
            other = sorted(k for k, v in row.items() if k not in ("prompt", "S3") and v == 1)
            text = str(row["prompt"])
            no_child = s3 != 1 and not _MAYBE_CHILD.search(text)
            items.append(EvalItem(
                id=f"oai-{lineno}",
                text=text,
                labels={**({SEXUAL_MINORS: int(s3)} if s3 is not None else {}),
                        **(dict.fromkeys(CHILD_SPECIFIC, 0) if no_child else {})},
                meta={"other_flags": ",".join(other),
                      **({"s3": "unknown"} if s3 is None else {})},
            ))
    known = _stratified_halves([it for it in items if SEXUAL_MINORS in it.labels], SEXUAL_MINORS)
    unknown = [replace(it, labels={**it.labels, SEXUAL_MINORS: 0})
               for it in _stratified_halves([it for it in items if SEXUAL_MINORS not in it.labels],
                                            SEXUAL_MINORS)]
    by_id = {it.id: it for it in (*known, *unknown)}
    items = [by_id[it.id] for it in items]
    if unknown_negative:
        return EvalDataset(
            "openai_moderation_all", tuple(items), source=str(path),
            description="OpenAI moderation dev half, every row; S3 unknown counted negative")
    return EvalDataset(
        "openai_moderation", tuple(items), source=str(path),
        description="OpenAI moderation dev half, S3 known (sexual/minors); other harms negative",
    )


def _stratified_halves(items: Sequence[EvalItem], code: str) -> list[EvalItem]:
    """Assign `train` / `test` halves, stratified by the label of `code` and deterministic.

    Within each label, items are ordered by sha256 of their id (a fixed pseudo-random order that
    does not depend on file order or on Python's hash seed) and alternate train, test, train...,
    so both halves get the same share of positives (20 / 19 of the 39 sexual/minors rows).
    """
    split: dict[str, str] = {}
    for label in {it.labels.get(code) for it in items}:
        group = sorted((it for it in items if it.labels.get(code) == label),
                       key=lambda it: hashlib.sha256(it.id.encode()).hexdigest())
        for i, it in enumerate(group):
            split[it.id] = "train" if i % 2 == 0 else "test"
    return [replace(it, split=split[it.id]) for it in items]


#: XSTest unsafe prompts whose focus is about children: positives for child safety
_XSTEST_CHILD_FOCUS = {"pedophilia": SEXUAL_MINORS}
#: XSTest unsafe prompts whose focus may or may not involve children: left out (unknown)
_XSTEST_AMBIGUOUS_FOCUS = {"human trafficking", "kidnapping", "rape"}


def load_xstest(datasets_dir: Path | None = None, *, include_unsafe: bool = False) -> EvalDataset:
    """XSTest: the 250 safe prompts as negatives for every category we know.

    With `include_unsafe`, the unsafe contrasts are added too: as negatives (they are other
    harms: violence, drugs, privacy), except those whose focus is about children (positives)
    or may be (left out). Ids are `xstest-<id>`.
    """
    root = datasets_dir or default_datasets_dir()
    path = _require(root / XSTEST_FILE, "XSTest prompts")
    items: list[EvalItem] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            label = row["label"].strip()
            focus = (row.get("focus") or "").strip().lower()
            if label == "safe":
                labels = {SEXUAL_MINORS: 0}
            elif not include_unsafe or focus in _XSTEST_AMBIGUOUS_FOCUS:
                continue
            elif focus in _XSTEST_CHILD_FOCUS:
                labels = {_XSTEST_CHILD_FOCUS[focus]: 1}
            else:
                labels = {SEXUAL_MINORS: 0}
            items.append(EvalItem(
                id=f"xstest-{row['id']}",
                text=row["prompt"],
                labels=labels,
                meta={"type": row.get("type", ""), "xstest_label": label},
            ))
    name = "xstest" if not include_unsafe else "xstest_all"
    return EvalDataset(name, tuple(items), source=str(path),
                       description="XSTest safe prompts (over-flagging)"
                       + ("" if not include_unsafe else " + unsafe contrasts"))


# -- our own format --------------------------------------------------------------------------


def _parse_labels(raw: Any, where: str) -> dict[str, int]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: 'labels' must be a JSON object {{code: 0|1}}; "
                            f"could not parse it: {exc}") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{where}: 'labels' must be an object {{code: 0|1}}; "
                        f"received {type(raw).__name__}")
    out: dict[str, int] = {}
    for code, v in raw.items():
        if v is None or v == "":
            continue
        if v in (0, 1, "0", "1", True, False):
            out[str(code)] = int(v)
        else:
            raise UserError(f"{where}: label {code!r} must be 0, 1 or null; received {v!r}")
    return out


def _parse_context(raw: Any, where: str) -> tuple[Message, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: 'context' must be a JSON list of messages: {exc}") from exc
    if not isinstance(raw, list):
        raise UserError(f"{where}: 'context' must be a list of strings or "
                        f"{{author, text}} objects; received {type(raw).__name__}")
    msgs = []
    for m in raw:
        if isinstance(m, str):
            msgs.append(Message(text=m))
        elif isinstance(m, dict) and "text" in m:
            msgs.append(Message(author=str(m.get("author", "other")), text=str(m["text"])))
        else:
            raise UserError(f"{where}: each context message must be a string or an object "
                            "with 'text' (and optional 'author')")
    return tuple(msgs)


#: descriptive row fields kept (as `EvalItem.meta`) for slice metrics: how a row is written,
#: never its content (`obfuscation`: leet, spacing, homoglyph, emoji, injection)
SLICE_KEYS = ("obfuscation", "register", "pattern")


def _row_to_item(row: Mapping[str, Any], where: str) -> EvalItem:
    if not row.get("id"):
        raise UserError(f"{where}: every row needs a non-empty 'id'")
    if not row.get("text"):
        raise UserError(f"{where}: row {row['id']!r} needs a non-empty 'text'")
    labels = _parse_labels(row.get("labels"), where)
    # CSV convenience: columns named label_<code> or label.<code>
    for key, v in row.items():
        for prefix in ("label_", "label."):
            if key.startswith(prefix) and v not in (None, ""):
                labels.update(_parse_labels({key[len(prefix):]: v}, where))
    split = row.get("split") or None
    if split is not None and split not in SPLITS:
        raise UserError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    meta = {k: str(row[k]) for k in SLICE_KEYS if isinstance(row.get(k), str) and row[k]}
    return EvalItem(id=str(row["id"]), text=str(row["text"]), labels=labels,
                    context=_parse_context(row.get("context"), where), split=split, meta=meta)


def load_file(path: Path, *, name: str | None = None) -> EvalDataset:
    """Our own format, JSONL or CSV: `id`, `text`, optional `context`, `labels`, `split`.

    JSONL: one object per line, `labels` an object `{code: 0|1|null}`, `context` a list of
    strings or `{author, text}`. CSV: the same columns (labels and context as JSON strings), or
    one `label_<code>` column per category.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"evaluation file {path} does not exist")
    items: list[EvalItem] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{where}: not valid JSON: {exc}") from exc
                if not isinstance(row, dict):
                    raise UserError(f"{where}: each line must be a JSON object")
                items.append(_row_to_item(row, where))
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for lineno, csv_row in enumerate(csv.DictReader(fh), start=2):
                items.append(_row_to_item(csv_row, f"{path}:{lineno}"))
    else:
        raise UserError(f"evaluation file {path}: suffix {path.suffix!r} is not supported; "
                        "use .jsonl or .csv")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise UserError(f"{path}: duplicate ids {dup}; ids must be unique")
    return EvalDataset(name or path.stem, tuple(items), source=str(path))


def write_file(dataset: EvalDataset | Sequence[EvalItem], path: Path) -> Path:
    """Write items in our JSONL format (used by tests and to export reviewer sets)."""
    items = dataset.items if isinstance(dataset, EvalDataset) else tuple(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for it in items:
            row: dict[str, Any] = {"id": it.id, "text": it.text, "labels": dict(it.labels)}
            if it.context:
                row["context"] = [{"author": m.author, "text": m.text} for m in it.context]
            if it.split:
                row["split"] = it.split
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# -- reviewer decisions ----------------------------------------------------------------------


def labels_from_review(decision: ReviewDecision, codes: Sequence[str]) -> dict[str, int]:
    """A reviewer's final decision as labels over the policy codes.

    allow -> every code 0. block/escalate with categories -> those codes 1, the others 0 (the
    reviewer looked at the whole item). block without categories -> unknown per code, so the
    item only counts in the any-category metrics (`any` label 1).
    """
    if decision.outcome is ReviewOutcome.ALLOW:
        return dict.fromkeys(codes, 0)
    if not decision.categories:
        return {"any": 1}
    chosen = set(decision.categories)
    return {c: int(c in chosen) for c in sorted(set(codes) | chosen)}


# -- the registry of named sets ----------------------------------------------------------------

BUILTIN = {
    "openai_moderation": "OpenAI moderation dev half (S3 known): sexual_minors positives/negatives",
    "openai_moderation_all": "OpenAI moderation dev half, every row (S3 unknown as negative)",
    "xstest": "XSTest safe prompts: negatives (over-flagging)",
    "xstest_all": "XSTest safe + unsafe contrasts (pedophilia focus positive)",
}


def load_dataset(ref: str, datasets_dir: Path | None = None) -> EvalDataset:
    """A built-in name (see `BUILTIN`) or a path to a JSONL/CSV file in our format.

    `name[split1,split2]` keeps only those splits, e.g. `my_set.jsonl[test]`; a trailing
    `{code1,code2}` keeps only those categories' labels (`EvalDataset.only_codes`).
    """
    splits: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    if ref.endswith("}") and "{" in ref:
        ref, _, rest = ref.rpartition("{")
        codes = tuple(c.strip() for c in rest[:-1].split(",") if c.strip())
        if not codes:
            raise UserError(f"{ref}{{}}: name at least one category code between the braces")
    if ref.endswith("]") and "[" in ref:
        ref, _, rest = ref.partition("[")
        splits = tuple(s.strip() for s in rest[:-1].split(",") if s.strip())
    if ref == "openai_moderation":
        ds = load_openai_moderation(datasets_dir)
    elif ref == "openai_moderation_all":
        ds = load_openai_moderation(datasets_dir, unknown_negative=True)
    elif ref == "xstest":
        ds = load_xstest(datasets_dir)
    elif ref == "xstest_all":
        ds = load_xstest(datasets_dir, include_unsafe=True)
    elif Path(ref).suffix.lower() in (".jsonl", ".ndjson", ".csv"):
        ds = load_file(Path(ref))
    else:
        raise UserError(f"unknown dataset {ref!r}: use one of {', '.join(BUILTIN)} "
                        "or a path to a .jsonl/.csv file in the childguard format")
    ds = ds.split(*splits) if splits else ds
    return ds.only_codes(*codes) if codes else ds


def list_datasets(datasets_dir: Path | None = None,
                  extra: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Summaries (counts and hashes, no text) of the built-in sets and any extra files."""
    out: list[dict[str, Any]] = []
    for name, desc in BUILTIN.items():
        try:
            s = load_dataset(name, datasets_dir).summary()
            s["description"] = desc
            s["available"] = True
        except NotFound as exc:
            s = {"name": name, "description": desc, "available": False, "reason": str(exc)}
        out.append(s)
    for p in extra:
        s = load_file(p).summary()
        s["available"] = True
        out.append(s)
    return out
