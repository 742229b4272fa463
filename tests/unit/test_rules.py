"""Policy rules (the recall floor): matching, validation, the authors' examples, loading.

The engine is tested with neutral marker words (`zq...`), never with harmful text; the shipped
rules are tested through their own examples, which `load_policy` checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from childguard.policy import PolicyError, load_policy
from childguard.rules import RULES_FILE, RuleSet, RulesSpec

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def rules(**over: Any) -> RuleSet:
    """A small rule set over marker words: alpha+beta within 5 words (review), gamma alone
    (judge), alpha + one of beta/delta unless omega (block)."""
    spec: dict[str, Any] = {
        "terms": {
            "alpha": ["zqalpha", "zq alpha two"],
            "beta": ["zqbeta*", "re:zq\\d+beta"],
            "gamma": ["zqgamma"],
            "delta": ["zqdelta"],
            "omega": ["zqomega"],
            "both": ["@alpha", "@gamma"],
        },
        "rules": [
            {"id": "pair", "category": "grooming", "floor": "review", "all": ["alpha", "beta"],
             "within": 5, "why": "alpha next to beta",
             "must_match": ["{alpha} x {beta}"], "must_not_match": ["{alpha} only"]},
            {"id": "lone", "floor": "judge", "all": ["gamma"], "why": "gamma anywhere",
             "must_match": ["{gamma}"]},
            {"id": "either", "category": "sextortion", "floor": "block", "all": ["alpha"],
             "any": ["beta", "delta"], "unless": ["omega"], "within": 3,
             "why": "alpha next to beta or delta", "must_match": ["{alpha} {delta}"],
             "must_not_match": ["{alpha} {delta} {omega}"]},
        ],
    }
    spec.update(over)
    return RuleSet(RulesSpec.model_validate(spec))


def fired(rs: RuleSet, text: str | None, **kw: Any) -> set[str]:
    return {h.rule for h in rs.match(text, **kw)}


def test_all_lists_must_match_within_the_window() -> None:
    rs = rules()
    assert "pair" in fired(rs, "zqalpha one two zqbetas")
    assert "pair" in fired(rs, "zq2beta then zqalpha")  # order does not matter; regex term
    assert "pair" not in fired(rs, "zqalpha " + "word " * 6 + "zqbeta")  # 7 words apart
    assert "pair" not in fired(rs, "zqalpha alone")
    assert "pair" in fired(rs, "zqalpha " + "word " * 9 + "zqalpha zqbeta")  # a later pair


def test_any_lists_and_unless_exceptions() -> None:
    rs = rules()
    assert "either" in fired(rs, "zqalpha zqdelta")
    assert "either" in fired(rs, "zqalpha zqbeta")
    assert "either" not in fired(rs, "zqalpha zqgamma")
    assert "either" not in fired(rs, "zqalpha zqdelta, said zqomega")  # the exception


def test_terms_match_whole_words_and_phrases_with_light_separators() -> None:
    rs = rules()
    assert "lone" not in fired(rs, "zqgammas")  # no `*`: whole word only
    assert "lone" not in fired(rs, "xzqgamma")
    assert "pair" in fired(rs, "zq-alpha-two zqbeta")  # phrase words joined by - _ . or space
    assert "pair" in fired(rs, "ZQALPHA ZQBETA")


@pytest.mark.parametrize("disguise", [
    "z q g a m m a",                 # spaced-out letters
    "zqg\u200bamma",                 # zero-width space
    "zqg\u0430mma",                  # Cyrillic a
    "ＺＱＧＡＭＭＡ",                  # full-width
    "zqg4mm4",                       # leetspeak
])
def test_rules_see_through_disguises(disguise: str) -> None:
    assert "lone" in fired(rules(), f"well {disguise} then")


def test_apostrophes_are_dropped_on_both_sides() -> None:
    rs = rules(terms={"aa": ["zqdon't zqtell"]}, rules=[
        {"id": "apos", "floor": "judge", "all": ["aa"], "why": "apostrophes",
         "must_match": ["zqdont zqtell", "zqdon’t zqtell"]}])
    assert rs.example_problems() == []
    assert fired(rs, "ZQDON'T ZQTELL") == {"apos"}


def test_conversation_hits_need_a_term_in_the_message() -> None:
    rs = rules()
    # the earlier message holds both terms: a reply without any is not flagged for it
    assert "pair" not in fired(rs, "ok see you", context=["zqalpha zqbeta"])
    # one term before, one in the message: the conversation fires
    hits = rules().match("zqbeta", context=["zqalpha"])
    assert [(h.rule, h.where) for h in hits if h.rule == "pair"] == [("pair", "conversation")]
    # a message hit is reported as such, once per rule
    hits = rs.match("zqalpha zqbeta", context=["zqalpha zqbeta"])
    assert [(h.rule, h.where) for h in hits if h.rule == "pair"] == [("pair", "message")]


def test_ocr_text_is_matched() -> None:
    hits = rules().match(None, ocr_text="zqgamma")
    assert [(h.rule, h.where, h.floor, h.category) for h in hits] == [
        ("lone", "ocr", "judge", None)]


def test_hits_name_rules_and_lists_never_the_words() -> None:
    (hit,) = [h for h in rules().match("zqalpha zqbetaxyz") if h.rule == "pair"]
    assert hit.lists == ("alpha", "beta")
    assert "zqbetaxyz" not in hit.label() and "zqbetaxyz" not in hit.why
    assert hit.label() == "rule pair (grooming, floor review, in message)"


def test_list_includes_expand_and_examples_use_placeholders() -> None:
    rs = rules(rules=[{"id": "inc", "floor": "judge", "all": ["both"], "why": "included",
                       "must_match": ["{both}", "zqgamma"]}])
    assert rs.spec.expanded("both") == ("zqalpha", "zq alpha two", "zqgamma")
    assert rs.expand("say {beta} and {alpha}") == "say zqbeta and zqalpha"
    assert rs.example_problems() == []


def test_broken_examples_are_reported_by_rule_and_index() -> None:
    rs = rules(rules=[
        {"id": "pair", "category": "grooming", "floor": "review", "all": ["alpha", "beta"],
         "within": 2, "why": "alpha next to beta",
         "must_match": ["{alpha} {beta}", "{alpha} one two three four {beta}"],
         "must_not_match": ["{alpha} only", "{beta} {alpha}"]},
        {"id": "ph", "floor": "judge", "all": ["gamma"], "why": "placeholder",
         "must_match": ["{nosuch}"]},
    ])
    problems = rs.example_problems()
    assert problems[0] == "rules.pair.must_match[1]: the rule does not fire on this example"
    assert problems[1] == "rules.pair.must_not_match[1]: the rule fires on this example"
    assert problems[2].startswith("rules.ph.must_match[0]: example placeholder {nosuch}")
    assert len(problems) == 3


@pytest.mark.parametrize(("change", "message"), [
    ({"rules": [{"id": "xx", "floor": "review", "all": ["alpha"], "why": "no category",
                 "must_match": ["zqalpha"]}]}, "a review floor needs a category"),
    ({"rules": [{"id": "xx", "floor": "judge", "all": ["alpha"], "unless": ["beta"],
                 "why": "judge with unless", "must_match": ["zqalpha"]}]},
     "a judge floor takes no `unless`"),
    ({"rules": [{"id": "xx", "floor": "judge", "all": ["nosuch"], "why": "unknown list",
                 "must_match": ["zqalpha"]}]}, "names term list 'nosuch', which is not defined"),
    ({"rules": [{"id": "xx", "floor": "judge", "all": ["alpha"], "why": "twice",
                 "must_match": ["zqalpha"]}] * 2}, "duplicate rule id 'xx'"),
    ({"terms": {"aa": ["re:(unclosed"]}}, "bad regular expression"),
    ({"terms": {"aa": ["@bb"], "bb": ["@aa"]}}, "cycle: aa -> bb -> aa"),
    ({"terms": {"aa": ["@zzz"]}}, "includes '@zzz', which is not defined"),
    ({"terms": {"aa": []}}, "term list 'aa' is empty"),
    ({"rules": [{"id": "xx", "floor": "never", "all": ["alpha"], "why": "bad floor",
                 "must_match": ["zqalpha"]}]}, "'judge', 'review' or 'block'"),
])
def test_invalid_rules_say_what_is_wrong(change: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"terms": {"alpha": ["zqalpha"], "beta": ["zqbeta"]}, "rules": []}
    base.update(change)
    with pytest.raises(ValidationError) as info:
        RulesSpec.model_validate(base)
    assert message in str(info.value)


def test_empty_rule_set_matches_nothing() -> None:
    assert RuleSet().match("anything at all", context=["more"]) == ()
    assert len(RuleSet()) == 0


# -- the policy folder ----------------------------------------------------------------------


def _edit_rules(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    f = folder / RULES_FILE
    data = yaml.safe_load(f.read_text())
    edit(data)
    f.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def test_shipped_rules_load_with_their_examples_holding() -> None:
    p = load_policy(POLICIES / "child_safety")
    assert len(p.rules) >= 20
    assert p.rules.example_problems() == []
    assert {r.category for r in p.rules.rules} >= set(p.spec.codes)  # every category has one
    for r in p.rules.rules:
        assert r.must_match, r.id
        if r.floor != "judge":
            assert r.must_not_match, f"{r.id}: a review/block rule needs benign examples"


def test_rules_are_part_of_the_policy_version(policy_copy: Path) -> None:
    before = load_policy(policy_copy).version
    _edit_rules(policy_copy, lambda d: d["terms"]["minor_young"].append("zqnewterm"))
    after = load_policy(policy_copy)
    assert after.version != before
    assert "minor" in after.rules.spec.terms
    (policy_copy / RULES_FILE).unlink()
    bare = load_policy(policy_copy)
    assert len(bare.rules) == 0 and bare.version not in (before, after.version)


def test_a_rule_whose_example_fails_stops_the_policy_from_loading(policy_copy: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["rules"][0]["must_not_match"].append(d["rules"][0]["must_match"][0])
    _edit_rules(policy_copy, edit)
    with pytest.raises(PolicyError) as info:
        load_policy(policy_copy)
    assert info.value.path.name == RULES_FILE
    assert info.value.field.startswith("rules.grooming_secrecy_with_child.must_not_match[")
    assert "the rule fires on this example" in str(info.value)


def test_a_rule_naming_an_unknown_category_is_refused(policy_copy: Path) -> None:
    _edit_rules(policy_copy, lambda d: d["rules"][0].update(category="nosuch"))
    with pytest.raises(PolicyError) as info:
        load_policy(policy_copy)
    assert "'nosuch' is not a category of the policy" in str(info.value)


def test_a_malformed_rules_file_names_its_field(policy_copy: Path) -> None:
    _edit_rules(policy_copy, lambda d: d["rules"][1].update(floor="sometimes"))
    with pytest.raises(PolicyError) as info:
        load_policy(policy_copy)
    assert info.value.path.name == RULES_FILE and "floor" in info.value.field


def test_policy_validate_runs_the_rule_examples(
        policy_copy: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from childguard.cli.main import main

    monkeypatch.setenv("CHILDGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHILDGUARD_POLICIES_DIR", str(policy_copy.parent))
    assert main(["policy", "validate"]) == 0
    n = len(load_policy(policy_copy).rules)
    assert f"({n} rules, " in capsys.readouterr().out

    def edit(d: dict[str, Any]) -> None:
        d["rules"][0]["must_match"].append("an ordinary sentence about the weather")
    _edit_rules(policy_copy, edit)
    assert main(["policy", "validate"]) == 2
    err = capsys.readouterr().err
    assert str(policy_copy / RULES_FILE) in err
    assert "rules.grooming_secrecy_with_child.must_match[" in err
    assert "the rule does not fire on this example" in err
