"""Policies as validated data: schema, loader, content-hash version, prompt rendering.

A policy is a folder `policies/<id>/` holding `policy.yaml` (categories, definitions, what does
and does not violate, abstract examples, severity, actions, thresholds, CLIP concepts) and
`prompt.md` (the judge template). Policy authors edit those files; this module only reads them.

Why the shape:
- The version is a content hash of the files, so every verdict names exactly the wording and
  thresholds that produced it, and an evaluation run can be tied to it.
- The prompt has a static part (instructions, definitions, examples: the same for every item) and
  an item part. The static part comes first and takes no item placeholders, so LLM servers can
  cache it as a prefix and a request pays only for its own tokens.
- The item is untrusted data. It is fenced by tags carrying a nonce derived from the content
  itself, so text inside the item cannot forge the closing tag, and the instructions tell the
  judge to treat anything inside the fence as data.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from childguard.errors import UserError
from childguard.rules import RULES_FILE, RuleSet, RulesSpec
from childguard.schema import Decision, Message, Severity

POLICY_FILE = "policy.yaml"
PROMPT_FILE = "prompt.md"
ITEM_SEPARATOR = "=== ITEM ==="

#: placeholders allowed in the static (system) part of prompt.md
STATIC_PLACEHOLDERS = frozenset(
    {"title", "summary", "categories", "category_codes", "examples", "does_not_violate_general",
     "output_format"}
)
#: placeholders allowed in the item part of prompt.md (after the separator line)
ITEM_PLACEHOLDERS = frozenset({"item", "category_codes"})

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_CODE = re.compile(r"^[a-z][a-z0-9_]{1,39}$")


class PolicyError(UserError):
    """A policy file is invalid. Says which file, which field, and what is allowed."""

    def __init__(self, path: Path, field: str, message: str) -> None:
        self.path = path
        self.field = field
        self.message = message
        super().__init__(f"{path}: {field}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    """Scores at or above `review` go to review; at or above `block` are blocked."""

    review: float = Field(gt=0.0, le=1.0)
    block: float = Field(gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.review < self.block:
            raise ValueError(
                f"review threshold ({self.review}) must be below block threshold ({self.block})"
            )
        return self

    def decide(self, score: float) -> Decision:
        if score >= self.block:
            return Decision.BLOCK
        if score >= self.review:
            return Decision.REVIEW
        return Decision.ALLOW


class Examples(_Strict):
    """Abstract descriptions of behaviour, never explicit content."""

    violating: tuple[str, ...] = ()
    benign: tuple[str, ...] = ()


class Category(_Strict):
    code: str
    name: str = Field(min_length=3)
    severity: Severity
    report: bool = Field(default=False, description="a confirmed hit must be reported (NCMEC)")
    applies_to: tuple[Literal["text", "image"], ...] = ("text", "image")
    definition: str = Field(min_length=20)
    violates: tuple[str, ...] = Field(min_length=1)
    does_not_violate: tuple[str, ...] = Field(min_length=1)
    examples: Examples = Examples()
    thresholds: Thresholds
    question: str = Field(min_length=10, description="the one-line yes/no question for this code")
    clip_concepts: tuple[str, ...] = ()

    @field_validator("code")
    @classmethod
    def _code_shape(cls, v: str) -> str:
        if not _CODE.match(v):
            raise ValueError(
                f"category code {v!r} must be lower_snake_case, 2-40 characters, starting with a "
                "letter"
            )
        return v


class Actions(_Strict):
    """What the product should do per decision (documentation for integrators and reviewers)."""

    allow: tuple[str, ...] = ()
    review: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    report: tuple[str, ...] = ()


class Gate(_Strict):
    """Cheap-signal gate: items whose every probe score is below `allow_below` skip the judge."""

    enabled: bool = True
    allow_below: float = Field(default=0.05, ge=0.0, le=1.0)
    #: without trained probes the gate cannot know an item is benign: judge everything
    require_probes: bool = True


def _logit(p: float, eps: float = 1e-4) -> float:
    p = min(1.0 - eps, max(eps, float(p)))
    return math.log(p / (1.0 - p))


class StackWeights(_Strict):
    """One category's stacker for judged items: P = sigmoid(bias + probe * logit(p_probe)
    + judge * logit(p_judge)). Fitted on a calib split by `childguard eval calibrate
    --stacker` (logistic regression); the judge may pull a score down as well as up. An item
    the judge did not see keeps its probe score. Rule floors are applied after combining, so
    the stacker never takes an item below a floor."""

    bias: float
    probe: float
    judge: float

    def score(self, probe: float, judge: float | None) -> float:
        if judge is None:
            return float(probe)
        z = self.bias + self.probe * _logit(probe) + self.judge * _logit(judge)
        z = max(-50.0, min(50.0, z))
        return 1.0 / (1.0 + math.exp(-z))


class JudgeConfig(_Strict):
    mode: Literal["single", "per_category"] = "single"
    max_tokens: int = Field(default=96, gt=0, le=1024)
    #: how a judged item's category score is formed: `judge_first` (the judge's score replaces
    #: the probe's), `max` (the higher of probe and judge: either model can flag) or `stacked`
    #: (a fitted combination per category, `stacker`; categories without one use `max`)
    combine: Literal["judge_first", "max", "stacked"] = "judge_first"
    #: written by calibration (calibration.yaml), not by hand: category code -> weights
    stacker: dict[str, StackWeights] = Field(default_factory=dict)


class PolicySpec(_Strict):
    """The validated content of policy.yaml."""

    id: str
    title: str = Field(min_length=3)
    version_note: str = ""
    severity: Severity
    summary: str = Field(min_length=20)
    does_not_violate_general: tuple[str, ...] = ()
    categories: tuple[Category, ...] = Field(min_length=1)
    actions: Actions = Actions()
    gate: Gate = Gate()
    judge: JudgeConfig = JudgeConfig()

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _CODE.match(v):
            raise ValueError(f"policy id {v!r} must be lower_snake_case, 2-40 characters")
        return v

    @model_validator(mode="after")
    def _unique_codes(self) -> PolicySpec:
        seen: set[str] = set()
        for cat in self.categories:
            if cat.code in seen:
                raise ValueError(
                    f"duplicate category code {cat.code!r}: each code must appear once"
                )
            seen.add(cat.code)
        return self

    def category(self, code: str) -> Category:
        for cat in self.categories:
            if cat.code == code:
                return cat
        raise KeyError(f"policy {self.id} has no category {code!r}; has {self.codes}")

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)


@dataclass(frozen=True)
class RenderedPrompt:
    """A judge prompt: `system` is the cacheable static part, `user` carries the item."""

    system: str
    user: str

    def as_messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


@dataclass(frozen=True)
class Policy:
    """A loaded policy: validated spec, the prompt templates, and the content-hash version."""

    spec: PolicySpec
    system_template: str
    item_template: str
    version: str
    path: Path
    #: the policy's rules (`rules.yaml`, the recall floor); empty when the folder has none
    rules: RuleSet = field(default_factory=RuleSet)
    #: the policy as written, when `calibration.yaml` replaced its thresholds, gate and
    #: combiner (`policy_calibration.apply_calibration`); None for an uncalibrated policy
    uncalibrated: Policy | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.spec.id

    def without_calibration(self) -> Policy:
        """The policy with the thresholds, gate and combiner of policy.yaml. Calibrated
        thresholds are fitted on the trained probes' scores: a pipeline without probes
        compares other scores (the judge's) and must use the policy's own."""
        return self.uncalibrated or self

    # -- rendering ----------------------------------------------------------------------
    def render_system(self) -> str:
        values = {
            "title": self.spec.title,
            "summary": self.spec.summary.strip(),
            "categories": _render_categories(self.spec.categories),
            "category_codes": _codes_line(self.spec.codes),
            "examples": _render_examples(self.spec.categories),
            "does_not_violate_general": _bullets(self.spec.does_not_violate_general),
            "output_format": _render_output_format(self.spec.codes),
        }
        return _substitute(self.system_template, values).strip() + "\n"

    def render(
        self,
        text: str | None,
        *,
        normalized: str | None = None,
        context: Sequence[Message] = (),
        ocr_text: str | None = None,
        has_image: bool = False,
    ) -> RenderedPrompt:
        """Render the prompt for one item; the item is fenced as untrusted data."""
        item = render_untrusted_item(
            text, normalized=normalized, context=context, ocr_text=ocr_text, has_image=has_image
        )
        user = _substitute(
            self.item_template, {"item": item, "category_codes": _codes_line(self.spec.codes)}
        )
        return RenderedPrompt(system=self.render_system(), user=user.strip() + "\n")

    def thresholds(self) -> dict[str, Thresholds]:
        return {c.code: c.thresholds for c in self.spec.categories}


# -- loading ------------------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    """Load and validate `path` (a policy folder). Raises PolicyError naming file and field."""
    path = Path(path)
    policy_file = path / POLICY_FILE
    prompt_file = path / PROMPT_FILE
    for f in (policy_file, prompt_file):
        if not f.is_file():
            raise PolicyError(f, "(file)", f"missing; a policy folder needs {POLICY_FILE} and "
                              f"{PROMPT_FILE}")
    raw_yaml = policy_file.read_bytes()
    raw_prompt = prompt_file.read_bytes()
    spec = _validated(policy_file, raw_yaml, PolicySpec, "a mapping of policy fields")
    if spec.id != path.name:
        raise PolicyError(policy_file, "id", f"is {spec.id!r} but the folder is {path.name!r}; "
                          "they must match")
    system_t, item_t = _split_prompt(prompt_file, raw_prompt)
    _check_placeholders(prompt_file, system_t, STATIC_PLACEHOLDERS, "static part")
    _check_placeholders(prompt_file, item_t, ITEM_PLACEHOLDERS, "item part")
    if "item" not in _placeholders(item_t):
        raise PolicyError(prompt_file, "{{item}}", "the item part must contain {{item}}")
    rules = _load_rules(path / RULES_FILE, spec)
    digest = hashlib.sha256(b"policy.yaml\0" + raw_yaml + b"\0prompt.md\0" + raw_prompt)
    if rules.raw:
        # the rules are part of what a verdict's policy_version names
        digest.update(b"\0rules.yaml\0" + rules.raw)
    return Policy(spec=spec, system_template=system_t, item_template=item_t,
                  version=digest.hexdigest()[:16], path=path, rules=rules)


def _load_rules(rules_file: Path, spec: PolicySpec) -> RuleSet:
    """The policy's rules.yaml, validated, its examples checked; an empty set if absent."""
    if not rules_file.is_file():
        return RuleSet()
    raw = rules_file.read_bytes()
    rules = RuleSet(_validated(rules_file, raw, RulesSpec, "a mapping with `terms` and `rules`"),
                    raw)
    problems = rules.check_categories(spec.codes) + rules.example_problems()
    if problems:
        field_name, _, message = problems[0].partition(": ")
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise PolicyError(rules_file, field_name, message + more)
    return rules


_M = TypeVar("_M", bound=BaseModel)


def _validated(file: Path, raw: bytes, model: type[_M], root: str) -> _M:
    """`raw` (a YAML file's bytes) validated as `model`; a PolicyError names the file and the
    field of the first problem."""
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PolicyError(file, "(file)", f"not valid UTF-8 YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(file, "(root)", f"must be {root}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {len(exc.errors()) - 1} more errors)" if len(exc.errors()) > 1 else ""
        raise PolicyError(file, _loc_to_field(err["loc"], data), f"{err['msg']}{more}") from exc


def list_policies(policies_dir: Path) -> list[Path]:
    """Policy folders under `policies_dir` (those with a policy.yaml), sorted by id."""
    if not policies_dir.is_dir():
        return []
    return sorted(p for p in policies_dir.iterdir() if (p / POLICY_FILE).is_file())


def resolve_policy_path(ref: str | Path, policies_dir: Path) -> Path:
    """A policy reference is an id under `policies_dir` or a path to a policy folder."""
    p = Path(ref)
    if p.is_dir():
        return p
    candidate = policies_dir / str(ref)
    if candidate.is_dir():
        return candidate
    known = ", ".join(x.name for x in list_policies(policies_dir)) or "none"
    raise PolicyError(p, "(policy)", f"no policy folder {ref!r}; known policies in "
                      f"{policies_dir}: {known}")


def diff_policies(a: Policy, b: Policy) -> dict[str, Any]:
    """What changed between two policies: thresholds, categories and the rendered prompt."""
    ta, tb = a.thresholds(), b.thresholds()
    threshold_changes = {
        code: {"from": ta[code].model_dump() if code in ta else None,
               "to": tb[code].model_dump() if code in tb else None}
        for code in sorted(set(ta) | set(tb))
        if ta.get(code) != tb.get(code)
    }
    prompt_diff = list(difflib.unified_diff(
        a.render_system().splitlines(), b.render_system().splitlines(),
        fromfile=f"{a.id}@{a.version}", tofile=f"{b.id}@{b.version}", lineterm="",
    ))
    return {
        "from": {"id": a.id, "version": a.version, "path": str(a.path)},
        "to": {"id": b.id, "version": b.version, "path": str(b.path)},
        "same": a.version == b.version,
        "categories_added": sorted(set(b.spec.codes) - set(a.spec.codes)),
        "categories_removed": sorted(set(a.spec.codes) - set(b.spec.codes)),
        "thresholds_changed": threshold_changes,
        "gate_changed": a.spec.gate != b.spec.gate,
        "prompt_diff": prompt_diff,
    }


# -- the untrusted item fence ------------------------------------------------------------


def _nonce(*parts: str | None) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update((p or "").encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:12]


def _neutralize(text: str) -> str:
    """Defang anything that looks like our fence tags inside the data."""
    return re.sub(r"<(/?)(untrusted|data|message)", r"<\1_\2", text, flags=re.IGNORECASE)


def render_untrusted_item(
    text: str | None,
    *,
    normalized: str | None = None,
    context: Sequence[Message] = (),
    ocr_text: str | None = None,
    has_image: bool = False,
) -> str:
    """The item as fenced data: context messages, the message, its normalised form, OCR text."""
    ctx_text = "\n".join(m.text for m in context)
    nonce = _nonce(text, normalized, ctx_text, ocr_text)
    lines = [f'<untrusted id="{nonce}">']
    if context:
        lines.append("<conversation_before>")
        for m in context:
            lines.append(f"[{_neutralize(m.author)}]: {_neutralize(m.text)}")
        lines.append("</conversation_before>")
    lines.append("<message>")
    lines.append(_neutralize(text) if text else "(no text)")
    lines.append("</message>")
    if normalized and not _same_but_case_and_spacing(normalized, text):
        lines.append("<message_normalized>")
        lines.append(_neutralize(normalized))
        lines.append("</message_normalized>")
    if ocr_text:
        lines.append("<text_in_image>")
        lines.append(_neutralize(ocr_text))
        lines.append("</text_in_image>")
    if has_image:
        lines.append("<image>an image is attached; judge it from the signals and text</image>")
    lines.append(f'</untrusted id="{nonce}">')
    return "\n".join(lines)


# -- helpers ------------------------------------------------------------------------------


def _same_but_case_and_spacing(normalized: str, text: str | None) -> bool:
    """True when normalisation only folded case and whitespace. Then the normalised form tells
    the judge nothing new and would double the item's prompt tokens (measured: 478 of 488
    OpenAI moderation rows and all 250 XSTest prompts differ from their normalised form, almost
    all by case alone); it is shown only when it undid a disguise (leet, homoglyphs, spacing)."""
    return " ".join(normalized.casefold().split()) == " ".join((text or "").casefold().split())


def _split_prompt(prompt_file: Path, raw: bytes) -> tuple[str, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(prompt_file, "(file)", f"not valid UTF-8: {exc}") from exc
    parts = [p for p in text.split("\n") if p.strip() == ITEM_SEPARATOR]
    if len(parts) != 1:
        raise PolicyError(prompt_file, ITEM_SEPARATOR,
                          f"needs exactly one line {ITEM_SEPARATOR!r} between the static part "
                          f"and the item part; found {len(parts)}")
    static, _, item = text.partition("\n" + ITEM_SEPARATOR)
    item = item.split("\n", 1)[1] if "\n" in item else ""
    return static, item


def _placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


def _check_placeholders(path: Path, template: str, allowed: Iterable[str], part: str) -> None:
    allowed_set = set(allowed)
    unknown = sorted(_placeholders(template) - allowed_set)
    if unknown:
        raise PolicyError(
            path, "{{" + unknown[0] + "}}",
            f"unknown placeholder in the {part}; allowed there: {', '.join(sorted(allowed_set))}",
        )


def _substitute(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _bullets(items: Iterable[str], indent: str = "") -> str:
    return "\n".join(f"{indent}- {i.strip()}" for i in items)


def _codes_line(codes: Sequence[str]) -> str:
    return ", ".join(codes)


def _render_categories(categories: Sequence[Category]) -> str:
    blocks = []
    for c in categories:
        blocks.append(
            f"### {c.code}: {c.name}\n"
            f"{c.definition.strip()}\n"
            f"Violates:\n{_bullets(c.violates)}\n"
            f"Does not violate:\n{_bullets(c.does_not_violate)}"
        )
    return "\n\n".join(blocks)


def _render_examples(categories: Sequence[Category]) -> str:
    lines = []
    for c in categories:
        for e in c.examples.violating:
            lines.append(f"- {e.strip()} -> {c.code}")
        for e in c.examples.benign:
            lines.append(f"- {e.strip()} -> none")
    return "\n".join(lines)


def _render_output_format(codes: Sequence[str]) -> str:
    return (
        'Answer with one JSON object and nothing else: {"violation": "yes" or "no", '
        '"category": one of [' + ", ".join(f'"{c}"' for c in codes) + ', "none"], '
        '"rationale": one short sentence}.'
    )


def _loc_to_field(loc: Sequence[int | str], data: Any) -> str:
    """Turn a pydantic error location into a readable field path, naming category codes."""
    parts: list[str] = []
    node: Any = data
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and key < len(node):
            item = node[key]
            label = item.get("code") if isinstance(item, dict) else None
            suffix = f"={label}" if label else ""
            parts[-1] = f"{parts[-1]}[{key}{suffix}]" if parts else str(key)
            node = item
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts) or "(root)"
