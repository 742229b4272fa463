"""Golden files of the rendered prompts: wording changes show as diffs, on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from childguard.cli.main import main
from childguard.cli.policy import render_golden
from childguard.policy import list_policies, load_policy

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"

pytestmark = pytest.mark.golden


@pytest.mark.parametrize("policy_dir", list_policies(REPO / "policies"), ids=lambda p: p.name)
def test_rendered_prompt_matches_golden(policy_dir: Path) -> None:
    for name, content in render_golden(load_policy(policy_dir)).items():
        golden = GOLDEN / name
        assert golden.is_file(), f"missing {golden}: run `childguard policy render " \
            f"{policy_dir.name} --update-golden`"
        assert golden.read_text(encoding="utf-8") == content, (
            f"{name} changed; if intended, run `childguard policy render {policy_dir.name} "
            "--update-golden` and commit the diff"
        )


def test_golden_check_fails_on_wording_change_and_passes_after_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies" / "child_safety", policies / "child_safety")
    gdir = tmp_path / "golden"
    shutil.copytree(GOLDEN, gdir)
    monkeypatch.setenv("CHILDGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHILDGUARD_POLICIES_DIR", str(policies))
    args = ["policy", "render", "child_safety", "--golden-dir", str(gdir)]
    assert main([*args, "--check-golden"]) == 0
    prompt = policies / "child_safety" / "prompt.md"
    prompt.write_text(prompt.read_text().replace("You label one item", "You label a single item"))
    assert main([*args, "--check-golden"]) == 1
    assert main([*args, "--update-golden"]) == 0
    assert main([*args, "--check-golden"]) == 0
    assert "a single item" in (gdir / "child_safety.system.txt").read_text()
