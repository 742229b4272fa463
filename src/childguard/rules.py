"""Policy rules: a recall floor that policy authors own, as data (`policies/<id>/rules.yaml`).

Why: a classifier learns what its training data shows and a gate calibrated on one public set
lets everything else skip the judge. Measured on realistic held-out messages, most missed
violations (ads offering minors, trade in abuse material in slang, injection-wrapped grooming)
never reached the judge because every probe scored them below the gate bar. Trust & Safety
teams answer this with term lists and co-occurrence rules that they read and edit themselves
("an age indicator near a request for images", "abuse-material slang near a trade term"). A
rule hit is a *floor*, never a ceiling:

- `judge`: the gate may not allow the item; the judge reads it.
- `review`: the category is at least at its review threshold, whatever the models say.
- `block`: the category is at its block threshold (for patterns with no benign reading).

The judge and the classifier can raise a category above a floor, never lower it below one.

Matching runs on the normalised text (`childguard.normalize`: case, leetspeak, homoglyphs,
spaced-out letters, zero-width characters), with apostrophes dropped so "don't" and "dont"
are one word. A term is a phrase of words (`*` at the end of a word matches any ending), a
regular expression written `re:...`, or `@list` for every term of another list. A rule names
term lists that must all match (`all`), and optionally lists of which at least one must match
(`any`), within `within` words of each other. Rules see the message, the conversation joined
with it (at least one matched term must then lie in the message itself, so a reply is not
flagged for an earlier message alone), and text read from an image.

Every rule carries examples that must and must not fire it; they are checked when the policy
loads, so `childguard policy validate` (and every start) fails on a rule that does not do what
its author says. An example may write `{list}` for the first plain term of a term list, so
examples stay abstract (no explicit text in the policy files). Hits are reported by rule id and
list names only, never by the matched words (no raw content in logs or rationales).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from childguard.normalize import normalize_text

RULES_FILE = "rules.yaml"

Floor = Literal["judge", "review", "block"]
FLOOR_RANK: dict[str, int] = {"judge": 0, "review": 1, "block": 2}

_ID = re.compile(r"^[a-z][a-z0-9_]{1,59}$")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
_APOSTROPHES = re.compile(r"['\u2019\u2018`\u00b4]")
_WORD = re.compile(r"\S+")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """One co-occurrence rule: every `all` list (and one of the `any` lists) within `within`
    words; a hit raises `category` to at least `floor`."""

    id: str
    #: the policy category the floor applies to; may be left out only by a `judge` rule
    #: (e.g. text addressed to the classifier: suspicious, but of no category by itself)
    category: str | None = None
    floor: Floor
    all: tuple[str, ...] = Field(min_length=1)
    any: tuple[str, ...] = ()
    #: lists that, matched anywhere in the same text, keep the rule from firing: the benign
    #: readings (news, a hotline, a babysitting ad). Only `review`/`block` rules may have
    #: them, and each should have a `judge` rule without exceptions behind it, so an
    #: exception word lowers a floor to the judge, never to nothing.
    unless: tuple[str, ...] = ()
    within: int = Field(default=12, ge=1, le=400)
    why: str = Field(min_length=5, description="one line a reviewer reads next to the hit")
    must_match: tuple[str, ...] = Field(min_length=1)
    must_not_match: tuple[str, ...] = ()

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"rule id {v!r} must be lower_snake_case, 2-60 characters")
        return v

    @model_validator(mode="after")
    def _floor_needs(self) -> Rule:
        if self.floor != "judge" and self.category is None:
            raise ValueError(f"rule {self.id!r}: a {self.floor} floor needs a category")
        if self.floor == "judge" and self.unless:
            raise ValueError(f"rule {self.id!r}: a judge floor takes no `unless` exceptions "
                             "(sending an item to the judge costs only time)")
        return self


class RulesSpec(_Strict):
    """The validated content of rules.yaml."""

    version_note: str = ""
    terms: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    @field_validator("terms")
    @classmethod
    def _terms_shape(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, terms in v.items():
            if not _ID.match(name):
                raise ValueError(f"term list name {name!r} must be lower_snake_case")
            if not terms:
                raise ValueError(f"term list {name!r} is empty")
            _compile_list([t for t in terms if not t.startswith("@")], name)  # names the term
        return v

    def expanded(self, name: str, _path: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list's terms with `@other` entries replaced by the other list's terms."""
        if name in _path:
            raise ValueError(f"term lists include each other in a cycle: "
                             f"{' -> '.join((*_path, name))}")
        if name not in self.terms:
            raise ValueError(f"term list {_path[-1]!r} includes '@{name}', which is not defined")
        out: list[str] = []
        for t in self.terms[name]:
            out.extend(self.expanded(t[1:], (*_path, name)) if t.startswith("@") else (t,))
        return tuple(out)

    @model_validator(mode="after")
    def _references(self) -> RulesSpec:
        for name in self.terms:
            self.expanded(name)  # raises on an unknown or cyclic include
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}: each id must appear once")
            seen.add(rule.id)
            for name in (*rule.all, *rule.any, *rule.unless):
                if name not in self.terms:
                    raise ValueError(
                        f"rule {rule.id!r} names term list {name!r}, which is not defined; "
                        f"defined: {', '.join(sorted(self.terms)) or 'none'}")
        return self


@dataclass(frozen=True)
class RuleHit:
    """A rule that fired: by id and list names only (never the matched words)."""

    rule: str
    category: str | None
    floor: Floor
    lists: tuple[str, ...]
    where: str  # "message", "conversation" or "ocr"
    why: str

    def label(self) -> str:
        cat = f"{self.category}, " if self.category else ""
        return f"rule {self.rule} ({cat}floor {self.floor}, in {self.where})"


def _term_body(term: str, list_name: str) -> str:
    """A plain term as a regular expression (without its word boundaries) over normalised,
    apostrophe-free text."""
    words = _APOSTROPHES.sub("", normalize_text(term)).split()
    if not words:
        raise ValueError(f"term list {list_name!r}: empty term {term!r}")
    parts = []
    for w in words:
        if w.endswith("*") and len(w) > 1:
            parts.append(re.escape(w[:-1]) + r"\w*")
        else:
            parts.append(re.escape(w))
    return r"[\s\-_.]+".join(parts)


def _compile_list(terms: Sequence[str], list_name: str) -> re.Pattern[str]:
    """One pattern for a term list: its plain terms share one pair of word boundaries (so a
    text is scanned once per list and most positions fail at the boundary), its `re:` terms
    are tried as written."""
    plain = [_term_body(t, list_name) for t in terms if not t.startswith("re:")]
    # longest first, so "middle schooler" wins over "middle school" at the same position
    alts = [r"(?<!\w)(?:" + "|".join(sorted(plain, key=len, reverse=True)) + r")(?!\w)"] \
        if plain else []
    for t in terms:
        if t.startswith("re:"):
            try:
                re.compile(t[3:])
            except re.error as exc:
                raise ValueError(f"term list {list_name!r}: bad regular expression {t!r}: "
                                 f"{exc}") from exc
            alts.append(f"(?:{t[3:]})")
    return re.compile("|".join(alts))


def prepare_text(text: str) -> str:
    """The form rules match on: normalised, apostrophes dropped."""
    return _APOSTROPHES.sub("", normalize_text(text))


class _Doc:
    """A prepared text with its word offsets, for word distances between matches."""

    def __init__(self, text: str, message_from: int = 0) -> None:
        self.text = text
        self.starts = [m.start() for m in _WORD.finditer(text)]
        #: char offset where the message begins (conversation docs put context first)
        self.message_from = message_from

    def word_at(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self.starts, offset) - 1)


class RuleSet:
    """Compiled rules of one policy. Empty when the policy has no rules.yaml."""

    def __init__(self, spec: RulesSpec | None = None, raw: bytes = b"") -> None:
        self.spec = spec or RulesSpec()
        self.raw = raw
        # one alternation per list: a text is scanned once per list, not once per term
        self._terms: dict[str, re.Pattern[str]] = {
            name: _compile_list(self.spec.expanded(name), name) for name in self.spec.terms
        }

    def __len__(self) -> int:
        return len(self.spec.rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.spec.rules

    # -- matching -------------------------------------------------------------------------
    def match(self, text: str | None, *, context: Sequence[str] = (),
              ocr_text: str | None = None) -> tuple[RuleHit, ...]:
        """Rules that fire on an item: its message, its recent conversation, its OCR text.
        One hit per rule (the first place it fires, in that order)."""
        if not self.spec.rules:
            return ()
        docs: list[tuple[str, _Doc]] = []
        if text:
            message = prepare_text(text)
            docs.append(("message", _Doc(message)))
            if context:
                before = " \n ".join(prepare_text(c) for c in context if c)
                if before:
                    joined = before + " \n "
                    docs.append(("conversation",
                                 _Doc(joined + message, message_from=len(joined))))
        if ocr_text:
            docs.append(("ocr", _Doc(prepare_text(ocr_text))))
        hits: list[RuleHit] = []
        fired: set[str] = set()
        for where, doc in docs:
            positions = {name: self._positions(name, doc) for name in self._terms}
            for rule in self.spec.rules:
                if rule.id in fired:
                    continue
                if any(positions[n] for n in rule.unless):
                    continue
                if _fires(rule, positions, need_message=where == "conversation"):
                    names = tuple(n for n in (*rule.all, *rule.any) if positions[n])
                    hits.append(RuleHit(rule=rule.id, category=rule.category, floor=rule.floor,
                                        lists=names, where=where, why=rule.why))
                    fired.add(rule.id)
        return tuple(hits)

    def _positions(self, name: str, doc: _Doc) -> list[tuple[int, bool]]:
        return [(doc.word_at(m.start()), m.start() >= doc.message_from)
                for m in self._terms[name].finditer(doc.text)]

    # -- the authors' examples ------------------------------------------------------------
    def expand(self, example: str) -> str:
        """`{list}` in an example becomes the first plain (non-regex) term of that list."""
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            terms = self.spec.expanded(name) if name in self.spec.terms else ()
            plain = [t for t in terms if not t.startswith("re:")]
            if not plain:
                raise ValueError(f"example placeholder {{{name}}} names no term list with a "
                                 "plain term")
            return plain[0].replace("*", "")
        return _PLACEHOLDER.sub(sub, example)

    def example_problems(self) -> list[str]:
        """Each rule's must_match examples fire it and its must_not_match examples do not.
        Returns one line per broken example (empty when all hold)."""
        problems: list[str] = []
        for rule in self.spec.rules:
            for field, examples, should_fire in (("must_match", rule.must_match, True),
                                                 ("must_not_match", rule.must_not_match, False)):
                for i, ex in enumerate(examples):
                    where = f"rules.{rule.id}.{field}[{i}]"
                    try:
                        fired = any(h.rule == rule.id for h in self.match(self.expand(ex)))
                    except ValueError as exc:
                        problems.append(f"{where}: {exc}")
                        continue
                    if fired != should_fire:
                        problems.append(f"{where}: the rule " + (
                            "does not fire on this example" if should_fire
                            else "fires on this example"))
        return problems

    def check_categories(self, codes: Sequence[str]) -> list[str]:
        """Rules naming a category the policy does not have."""
        return [f"rules.{r.id}.category: {r.category!r} is not a category of the policy "
                f"({', '.join(codes)})" for r in self.spec.rules
                if r.category is not None and r.category not in codes]


def _fires(rule: Rule, positions: Mapping[str, list[tuple[int, bool]]], *,
           need_message: bool) -> bool:
    """Whether every `all` list (and one `any` list, if any are named) matches within
    `rule.within` words; with `need_message`, at least one of the chosen matches lies in the
    message part of a conversation."""
    groups: list[list[tuple[int, bool]]] = [positions[n] for n in rule.all]
    if rule.any:
        groups.append([p for n in rule.any for p in positions[n]])
    if any(not g for g in groups):
        return False
    events = sorted((pos, gi, in_msg) for gi, g in enumerate(groups) for pos, in_msg in g)
    k = len(groups)
    # sliding window over the sorted matches: the smallest spans covering every group
    counts = [0] * k
    covered = 0
    lo = 0
    for hi in range(len(events)):
        pos, gi, _ = events[hi]
        if counts[gi] == 0:
            covered += 1
        counts[gi] += 1
        while covered == k:
            lo_pos, lo_gi, _ = events[lo]
            if pos - lo_pos <= rule.within and (
                    not need_message or any(e[2] for e in events[lo:hi + 1])):
                return True
            counts[lo_gi] -= 1
            if counts[lo_gi] == 0:
                covered -= 1
            lo += 1
    return False
