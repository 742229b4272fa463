"""`childguard policy ...`: the policy author's commands.

list, validate, render (with golden files, so wording changes show as diffs in review) and diff
(what a change to wording or thresholds does, before `eval compare` shows what it does to the
numbers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from childguard.cli.main import get_settings
from childguard.errors import UserError
from childguard.policy import (
    Policy,
    PolicyError,
    diff_policies,
    list_policies,
    load_policy,
    resolve_policy_path,
)
from childguard.schema import Message

app = typer.Typer(help="List, validate, render and diff policies (policies/<id>/).",
                  no_args_is_help=True)

#: the fixed sample item rendered into the golden files: benign, abstract
GOLDEN_SAMPLE = {
    "text": "Can you recommend a good book about the history of the printing press?",
    "context": [Message(author="sender", text="Hi! I am researching old technology.")],
}


def golden_dir_default() -> Path:
    return Path("tests/golden")


def _load(ref: str, ctx: typer.Context) -> Policy:
    settings = get_settings(ctx)
    return load_policy(resolve_policy_path(ref, settings.policies_dir))


def render_golden(policy: Policy) -> dict[str, str]:
    """The golden files of a policy: the static prompt, and a sample item's user message."""
    sample = policy.render(
        GOLDEN_SAMPLE["text"],  # type: ignore[arg-type]
        context=GOLDEN_SAMPLE["context"],  # type: ignore[arg-type]
    )
    return {
        f"{policy.id}.system.txt": sample.system,
        f"{policy.id}.item.txt": sample.user,
    }


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List the policies in the policies directory, with their versions."""
    settings = get_settings(ctx)
    rows: list[dict[str, Any]] = []
    for path in list_policies(settings.policies_dir):
        try:
            p = load_policy(path)
            rows.append({"id": p.id, "title": p.spec.title, "version": p.version,
                         "categories": list(p.spec.codes), "path": str(path), "valid": True})
        except PolicyError as exc:
            rows.append({"id": path.name, "path": str(path), "valid": False, "error": str(exc)})
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no policies in {settings.policies_dir}")
    for r in rows:
        if r["valid"]:
            typer.echo(f"{r['id']:<20} {r['version']}  {r['title']}  ({len(r['categories'])} "
                       "categories)")
        else:
            typer.echo(f"{r['id']:<20} INVALID  {r['error']}")


@app.command()
def validate(
    ctx: typer.Context,
    policies: list[str] = typer.Argument(None, help="policy ids or folders (default: all)"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Validate policies; exit 2 naming the file and field of the first problem."""
    settings = get_settings(ctx)
    refs = policies or [p.name for p in list_policies(settings.policies_dir)]
    if not refs:
        raise UserError(f"no policies found in {settings.policies_dir}")
    results = []
    for ref in refs:
        # raises PolicyError; loading also runs every rule's must/must-not examples
        p = load_policy(resolve_policy_path(ref, settings.policies_dir))
        examples = sum(len(r.must_match) + len(r.must_not_match) for r in p.rules.rules)
        results.append({"id": p.id, "version": p.version, "valid": True,
                         "rules": len(p.rules), "rule_examples": examples})
    if json_out:
        typer.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            typer.echo(f"ok  {r['id']}@{r['version']}  ({r['rules']} rules, "
                       f"{r['rule_examples']} rule examples hold)")


@app.command()
def render(
    ctx: typer.Context,
    policy: str = typer.Argument(..., help="policy id or folder"),
    text: str | None = typer.Option(None, "--text", help="render with this item text"),
    update_golden: bool = typer.Option(False, "--update-golden",
                                       help="rewrite the golden files from this rendering"),
    check_golden: bool = typer.Option(False, "--check-golden",
                                      help="exit 1 if the golden files differ"),
    golden_dir: Path = typer.Option(None, "--golden-dir", help="default: tests/golden"),
) -> None:
    """Print the judge prompt of a policy (system part, then the item part)."""
    p = _load(policy, ctx)
    gdir = golden_dir or golden_dir_default()
    if update_golden or check_golden:
        files = render_golden(p)
        if update_golden:
            gdir.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                (gdir / name).write_text(content, encoding="utf-8")
                typer.echo(f"wrote {gdir / name}")
            return
        stale = [n for n, c in files.items()
                 if not (gdir / n).is_file() or (gdir / n).read_text(encoding="utf-8") != c]
        if stale:
            typer.echo(f"golden files differ: {', '.join(stale)}; review the change and run "
                       f"`childguard policy render {p.id} --update-golden`", err=True)
            raise typer.Exit(1)
        typer.echo("golden files up to date")
        return
    if text is not None:
        rendered = p.render(text)
        typer.echo(rendered.system)
        typer.echo("----- user -----")
        typer.echo(rendered.user)
    else:
        typer.echo(p.render_system())


@app.command()
def diff(
    ctx: typer.Context,
    a: str = typer.Argument(..., help="policy id or folder (before)"),
    b: str = typer.Argument(..., help="policy id or folder (after)"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """What changed between two policies: versions, categories, thresholds, prompt wording."""
    pa, pb = _load(a, ctx), _load(b, ctx)
    d = diff_policies(pa, pb)
    if json_out:
        typer.echo(json.dumps(d, indent=2))
        return
    typer.echo(f"{d['from']['id']}@{d['from']['version']} -> {d['to']['id']}@{d['to']['version']}")
    if d["same"]:
        typer.echo("identical")
        return
    for code in d["categories_added"]:
        typer.echo(f"+ category {code}")
    for code in d["categories_removed"]:
        typer.echo(f"- category {code}")
    for code, ch in d["thresholds_changed"].items():
        typer.echo(f"~ thresholds {code}: {ch['from']} -> {ch['to']}")
    if d["gate_changed"]:
        typer.echo("~ gate changed")
    for line in d["prompt_diff"]:
        typer.echo(line)


# -- drafts, promotion, rollback (the workbench's operations, for scripts and operators) ------

draft_app = typer.Typer(help="Drafts of the active policy: create, edit, validate, promote, "
                        "roll back (the workbench web page does the same).",
                        no_args_is_help=True)
app.add_typer(draft_app, name="draft")


def _drafts(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from childguard.store.store import Store
    from childguard.workbench.drafts import Drafts

    settings = get_settings(ctx)
    return Drafts(settings, Store.from_settings(settings))


def _role(value: str):  # type: ignore[no-untyped-def]
    from childguard.store.roles import Role

    try:
        return Role.parse(value)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


@draft_app.command("create")
def draft_create(ctx: typer.Context, by: str = typer.Option(..., "--by", help="the author"),
                 note: str = typer.Option("", help="what the draft is for"),
                 policy: str | None = typer.Option(None, help="policy id (default: the "
                                                   "configured one)")) -> None:
    """Copy the active version of the policy into a new draft; prints its id and folder."""
    d = _drafts(ctx).create(by, policy_id=policy, note=note)
    typer.echo(f"{d.id}\t{d.path}")


@draft_app.command("list")
def draft_list(ctx: typer.Context) -> None:
    for d in _drafts(ctx).all():
        typer.echo(f"{d.id}\t{d.policy_id}\tby {d.author}\tfrom {d.base_version}\t{d.note}")


@draft_app.command("set")
def draft_set(ctx: typer.Context, draft_id: str, file: str = typer.Argument(
        ..., help="policy.yaml | prompt.md | rules.yaml | calibration.yaml"),
              source: Path = typer.Argument(..., help="the new content"),
              by: str = typer.Option(..., "--by")) -> None:
    """Replace one file of a draft and validate the draft (exit 2 when it does not)."""
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {source} as UTF-8 text: {exc}") from exc
    v = _drafts(ctx).write(draft_id, file, text, by)
    _echo_validation(v)


@draft_app.command("validate")
def draft_validate(ctx: typer.Context, draft_id: str) -> None:
    _echo_validation(_drafts(ctx).validate(draft_id))


def _echo_validation(v: Any) -> None:
    if v.ok:
        typer.echo(f"ok  version {v.version} ({v.rules} rules, {v.rule_examples} rule examples "
                   "hold)")
        return
    for e in v.errors:
        typer.echo(f"invalid: {e}", err=True)
    raise typer.Exit(2)


@draft_app.command("promote")
def draft_promote(ctx: typer.Context, draft_id: str, by: str = typer.Option(..., "--by"),
                  role: str = typer.Option("admin", help="the promoter's role"),
                  note: str = typer.Option("", help="why")) -> None:
    """Make a draft the active version (the running service picks it up)."""
    version = _drafts(ctx).promote(draft_id, by, _role(role), note=note)
    typer.echo(f"active: {version}")


@app.command("rollback")
def rollback(ctx: typer.Context, version: str, by: str = typer.Option(..., "--by"),
             role: str = typer.Option("admin"), policy: str | None = typer.Option(None),
             note: str = typer.Option("")) -> None:
    """Make an earlier promoted version active again."""
    drafts = _drafts(ctx)
    pid = policy or get_settings(ctx).policy
    drafts.rollback(pid, version, by, _role(role), note=note)
    typer.echo(f"active: {version}")


@app.command("history")
def history(ctx: typer.Context, policy: str | None = typer.Option(None),
            json_out: bool = typer.Option(False, "--json")) -> None:
    """Promotions and rollbacks of the policy, oldest first."""
    rows = _drafts(ctx).history(policy)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['at']}\t{r['action']}\t{r['version']}\tby {r['actor']}"
                   + (f"\tapproved {r['approver']}" if r.get("approver") else ""))
