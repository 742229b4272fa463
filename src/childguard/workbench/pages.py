"""The policy workbench's web pages: server-rendered HTML on the API's own app (`/workbench`).

Why server-rendered forms: the page is for a handful of policy authors; plain forms with no
front-end build keep it auditable, testable in a real browser, and usable without JavaScript.
Sign-in is an API key of role policy_author or admin, kept in an HttpOnly, SameSite=Strict
cookie scoped to `/workbench` and checked against the key store on every request (a revoked
key is out at once); state-changing requests must come from the page's own origin.

Flow: the overview shows the active version, its history (roll back to any earlier one) and
the drafts; a draft page edits each policy file and the thresholds with the validator's
messages in place, tries a text under the active version and the draft side by side (rules,
probe scores, gate, the judge's rendered prompt and answer, the verdict), runs both on
evaluation sets (calib and benign sets, never test splits) with paired deltas and flipped
ids, and promotes (four-eyes by default; refused for an invalid draft).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from childguard.errors import ChildguardError, Forbidden, UserError
from childguard.policy import Policy
from childguard.policy_versions import POLICY_FILES, load_active_policy
from childguard.settings import Settings
from childguard.store.roles import Role
from childguard.workbench.drafts import Drafts, Validation
from childguard.workbench.trial import EvalComparison, StageView, Trial

__all__ = ["Workbench", "router"]

COOKIE = "cg_workbench"
router = APIRouter(prefix="/workbench", include_in_schema=False)


@dataclass
class Workbench:
    """What the pages need: drafts, a trial pipeline (built on first use) and the sets."""

    settings: Settings
    drafts: Drafts
    pipeline_factory: Callable[[], Any]
    datasets: Sequence[str] = ("evaluation_sets/child_safety_v2.jsonl[calib]", "xstest")
    _trial: Trial | None = field(default=None, repr=False)

    @property
    def trial(self) -> Trial:
        if self._trial is None:
            self._trial = Trial(self.settings, self.pipeline_factory())
        return self._trial

    def load_sets(self, names: Sequence[str]) -> list[Any]:
        from childguard.evaluation.datasets import load_dataset

        root = self.settings.policies_dir.parent
        out = []
        for name in names:
            if name not in self.datasets:
                raise UserError(f"evaluation set {name!r} is not offered here; choose from "
                                f"{', '.join(self.datasets)}")
            base, sep, rest = name.partition("[")
            path = root / base
            out.append(load_dataset(f"{path}{sep}{rest}" if path.exists() else name))
        return out


# -- helpers ---------------------------------------------------------------------------------

def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header a{color:#cfe0ff} main{padding:16px 20px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:12px 16px;margin:12px 0}
textarea{width:100%;font-family:ui-monospace,monospace;font-size:12px}
table{border-collapse:collapse}
td,th{border-bottom:1px solid #e3e6eb;padding:4px 8px;text-align:left;vertical-align:top}
.ok{color:#176f2c} .err{color:#b3261e;white-space:pre-wrap} .msg{background:#eef5ff;padding:8px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}
pre{white-space:pre-wrap;font-size:12px;max-height:320px;overflow:auto;background:#f3f4f6;
padding:6px}
button{padding:5px 12px}
"""


def _page(title: str, body: str, who: str | None = None) -> HTMLResponse:
    nav = (f'<a href="/workbench">Overview</a><span>signed in as {_e(who)}</span>'
           '<form method="post" action="/workbench/logout" style="margin:0">'
           '<button>Sign out</button></form>') if who else ""
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)} - childguard "
        f"workbench</title><style>{_CSS}</style></head><body><header><b>childguard policy "
        f"workbench</b>{nav}</header><main><h1>{_e(title)}</h1>{body}</main></body></html>")


@dataclass(frozen=True)
class _User:
    name: str
    role: Role


async def _user(request: Request) -> _User | None:
    secret = request.cookies.get(COOKIE)
    if not secret:
        return None
    result = await run_in_threadpool(request.app.state.store.check_key, secret)
    info = result.info
    if info is None or info.role not in (Role.ADMIN, Role.POLICY_AUTHOR):
        return None
    return _User(info.name, info.role)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # non-browser clients; the SameSite=Strict cookie is the guard
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _wb(request: Request) -> Workbench:
    wb = getattr(request.app.state, "workbench", None)
    if not isinstance(wb, Workbench):
        raise UserError("the policy workbench is not configured on this server")
    return wb


def _to_overview(message: str = "") -> RedirectResponse:
    suffix = f"?msg={quote(message[:300])}" if message else ""
    return RedirectResponse(f"/workbench{suffix}", status_code=303)


# -- sign in ------------------------------------------------------------------------------------

@router.get("", response_class=HTMLResponse)
async def overview(request: Request, msg: str = "") -> Response:
    user = await _user(request)
    if user is None:
        return _page("Sign in", """
<section><form method="post" action="/workbench/login">
<p>An API key of role <b>policy_author</b> or <b>admin</b>
(<code>childguard keys create</code>).</p>
<input type="password" name="key" size="70" aria-label="API key" autocomplete="off">
<button id="signin">Sign in</button></form></section>""")
    wb = _wb(request)
    active = await run_in_threadpool(load_active_policy, wb.settings)
    history = await run_in_threadpool(wb.drafts.history)
    drafts = await run_in_threadpool(wb.drafts.all)
    rows = "".join(
        f"<tr><td>{_e(h['at'][:19])}</td><td>{_e(h['action'])}</td><td><code>{_e(h['version'])}"
        f"</code></td><td>{_e(h['actor'])}</td><td>{_e(h.get('approver') or '')}</td><td>"
        + ("active" if h["version"] == active.version else
           f"<form method='post' action='/workbench/rollback'><input type='hidden' "
           f"name='version' value='{_e(h['version'])}'><button>Roll back to this</button>"
           "</form>") + "</td></tr>" for h in history)
    drows = "".join(
        f"<tr><td><a href='/workbench/drafts/{_e(d.id)}'>{_e(d.id)}</a></td><td>{_e(d.author)}"
        f"</td><td><code>{_e(d.base_version)}</code></td><td>{_e(d.note)}</td></tr>"
        for d in drafts)
    body = (f"<p class='msg'>{_e(msg)}</p>" if msg else "") + f"""
<section><h2>Active policy</h2><p><b>{_e(active.id)}</b> version
<code id="active-version">{_e(active.version)}</code></p>
<table><tr><th>when</th><th>what</th><th>version</th><th>by</th><th>approved by</th><th></th></tr>
{rows or "<tr><td colspan=6>the shipped version; nothing promoted yet</td></tr>"}</table></section>
<section><h2>Drafts</h2><form method="post" action="/workbench/drafts">
<input name="note" placeholder="what the draft is for" size="50"> <button id="new-draft">New draft
of the active version</button></form>
<table><tr><th>draft</th><th>author</th><th>from version</th><th>note</th></tr>{drows}</table>
</section>"""
    return _page("Policy", body, user.name)


@router.post("/login")
async def login(request: Request, key: str = Form("")) -> Response:
    result = await run_in_threadpool(request.app.state.store.check_key, key.strip() or None)
    info = result.info
    if info is None or info.role not in (Role.ADMIN, Role.POLICY_AUTHOR):
        why = ("that key may not use the workbench (role policy_author or admin needed)"
               if info is not None else f"the key was not accepted ({result.reason})")
        return _page("Sign in", f"<p class='err'>{_e(why)}</p><p><a href='/workbench'>Try "
                     "again</a></p>")
    resp = RedirectResponse("/workbench", status_code=303)
    resp.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict", path="/workbench",
                    secure=request.url.scheme == "https", max_age=8 * 3600)
    return resp


@router.post("/logout")
async def logout() -> Response:
    resp = RedirectResponse("/workbench", status_code=303)
    resp.delete_cookie(COOKIE, path="/workbench")
    return resp


async def _guard(request: Request) -> _User | Response:
    user = await _user(request)
    if user is None:
        return RedirectResponse("/workbench", status_code=303)
    if request.method == "POST" and not _same_origin(request):
        return _page("Refused", "<p class='err'>cross-site request refused</p>", user.name)
    return user


# -- drafts -------------------------------------------------------------------------------------

@router.post("/drafts")
async def new_draft(request: Request, note: str = Form("")) -> Response:
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    d = await run_in_threadpool(_wb(request).drafts.create, user.name, note=note)
    return RedirectResponse(f"/workbench/drafts/{d.id}", status_code=303)


@router.get("/drafts/{draft_id}", response_class=HTMLResponse)
async def draft_page(request: Request, draft_id: str) -> Response:
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    return await _render_draft(request, user, draft_id)


async def _render_draft(request: Request, user: _User, draft_id: str, *,
                        validation: Validation | None = None, message: str = "",
                        tried: list[StageView] | None = None,
                        evaluated: EvalComparison | None = None) -> Response:
    wb = _wb(request)
    try:
        draft = await run_in_threadpool(wb.drafts.get, draft_id)
    except ChildguardError as exc:
        return _page("Draft", f"<p class='err'>{_e(exc)}</p>", user.name)
    v = validation if validation is not None else await run_in_threadpool(
        wb.drafts.validate, draft_id)
    status = (f"<p class='ok' id='validation'>valid: would be version <code>{_e(v.version)}"
              f"</code> ({v.rules} rules, {v.rule_examples} rule examples hold)</p>" if v.ok else
              "<div id='validation' class='err'>" + "".join(
                  f"<p>{_e(e)}</p>" for e in v.errors) + "</div>")
    files = ""
    for name in POLICY_FILES:
        text = await run_in_threadpool(wb.drafts.read, draft_id, name)
        files += (f"<details{' open' if name == 'policy.yaml' else ''}><summary>{_e(name)}"
                  f"</summary><form method='post' action='/workbench/drafts/{_e(draft_id)}/file'>"
                  f"<input type='hidden' name='name' value='{_e(name)}'><textarea name='text' "
                  f"rows='18' id='file-{_e(name)}'>{_e(text)}</textarea>"
                  f"<button id='save-{_e(name)}'>Save {_e(name)}</button></form></details>")
    thresholds = _thresholds(v.policy)
    trows = "".join(
        f"<tr><td>{_e(code)}</td><td><input name='review_{_e(code)}' value='{t[0]}' size=8>"
        f"</td><td><input name='block_{_e(code)}' value='{t[1]}' size=8></td></tr>"
        for code, t in thresholds.items())
    last = await run_in_threadpool(_last_eval, wb, draft_id)
    sets = "".join(f"<label><input type='checkbox' name='datasets' value='{_e(s)}' checked> "
                   f"{_e(s)}</label><br>" for s in wb.datasets)
    body = (f"<p class='msg' id='message'>{_e(message)}</p>" if message else "") + f"""
<p>Draft of <b>{_e(draft.policy_id)}</b> by {_e(draft.author)}, from version
<code>{_e(draft.base_version)}</code>. {_e(draft.note)}</p>
<section><h2>Validation</h2>{status}</section>
<section><h2>Thresholds</h2>
<form method="post" action="/workbench/drafts/{_e(draft_id)}/thresholds">
<table><tr><th>category</th><th>review at</th><th>block at</th></tr>{trows}</table>
<button id="save-thresholds">Save thresholds</button></form></section>
<section><h2>Files</h2>{files}</section>
<section><h2>Try an item</h2><form method="post" action="/workbench/drafts/{_e(draft_id)}/try">
<textarea name="text" rows="3" id="try-text"></textarea><button id="try">Try under the active
version and this draft</button></form>{_tried(tried) if tried else ""}</section>
<section><h2>Evaluate</h2><form method="post" action="/workbench/drafts/{_e(draft_id)}/evaluate">
{sets}<label>items per set <input name="limit" value="50" size="5"></label>
<button id="evaluate">Run the draft and the active version</button></form>
{_evaluated(evaluated.as_dict()) if evaluated else (_evaluated(last) if last else "")}</section>
<section><h2>Promote</h2><form method="post" action="/workbench/drafts/{_e(draft_id)}/promote">
<input name="note" placeholder="why" size="50"> <button id="promote">Promote this draft</button>
</form><p>Promotion needs a valid draft and, with four-eyes on, an admin or a policy author
other than the draft's author; the metric deltas of the last evaluation go into the audit
log.</p></section>"""
    return _page(f"Draft {draft_id}", body, user.name)


def _thresholds(policy: Policy | None) -> dict[str, tuple[float, float]]:
    """The thresholds table of a valid draft (from the policy validation loaded); none for an
    invalid one."""
    if policy is None:
        return {}
    return {c.code: (c.thresholds.review, c.thresholds.block) for c in policy.spec.categories}


def _tried(views: list[StageView]) -> str:
    cols = ""
    for label, v in zip(("Active version", "This draft"), views, strict=False):
        cats = ", ".join(f"{c.code} {c.score:.2f} ({c.decision.value})"
                         for c in v.verdict.categories)
        scores = ", ".join(f"{k} {s:.3f}" for k, s in v.probe_scores.items())
        cols += f"""<div class="trial" data-version="{_e(v.policy_version)}"><h3>{label}</h3>
<p>version <code>{_e(v.policy_version)}</code></p>
<p><b>Rules fired:</b> {_e(", ".join(v.rules) or "none")}</p>
<p><b>Classifier scores:</b> {_e(scores or "none")}</p>
<p><b>Gate:</b> {_e(v.gate)}</p>
<p><b>Judge:</b> {_e(v.judge_answer or "not asked")}</p>
<details><summary>Judge prompt</summary><pre>{_e(v.prompt)}</pre></details>
<p class="verdict"><b>Verdict: {_e(v.verdict.decision.value)}</b> ({_e(cats or "no categories")});
{_e(v.verdict.rationale)}</p></div>"""
    return f"<div class='cols' id='trial'>{cols}</div>"


def _evaluated(data: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{d['active']:.3f}</td><td>{d['draft']:.3f}</td>"
        f"<td><b>{d['delta']:+.3f}</b></td><td>[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]</td></tr>"
        for name, d in data.get("deltas", {}).items())
    flips = "".join(
        f"<tr><td>{_e(f['dataset'])}</td><td>{_e(f['id'])}</td><td>{_e(f['active'])}</td>"
        f"<td>{_e(f['draft'])}</td><td>"
        + ("not shown (a violating row of a public set)" if _public(f["dataset"])
           and f.get("violating", True) else
           f"<a href='/workbench/items?set={quote(f['dataset'])}&id={quote(f['id'])}'>open</a>")
        + "</td></tr>" for f in data.get("flipped", [])[:200])
    return f"""<div id="evaluation"><p>{data.get("items", 0)} items of
{_e(", ".join(data.get("datasets", [])))}; MLflow runs {_e(data.get("runs", {}))}</p>
<table><tr><th>rate</th><th>active</th><th>draft</th><th>draft - active</th><th>95% interval
(paired bootstrap)</th></tr>{rows}</table><h3>Items whose decision changed
({len(data.get("flipped", []))}; content only when opened, every opening audited)</h3>
<table id="flipped"><tr><th>set</th><th>id</th><th>active</th><th>draft</th><th>content</th>
</tr>{flips}</table></div>"""


def _public(dataset: str) -> bool:
    """A public labelled set (OpenAI moderation, XSTest), as opposed to our own sets."""
    from childguard.evaluation.datasets import BUILTIN

    base = dataset.split(":", 1)[0].split("[", 1)[0]
    return base in BUILTIN or any(base.startswith(b) for b in BUILTIN)


@router.get("/items", response_class=HTMLResponse)
async def open_item(request: Request, dataset: str = Query("", alias="set"),
                    item_id: str = Query("", alias="id")) -> Response:
    """One evaluation item's text, on request, audited; never a violating row of a public
    set (those are referenced by id only, as everywhere in this project)."""
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    wb = _wb(request)
    sets = await run_in_threadpool(wb.load_sets, list(wb.datasets))
    item = next((it for ds in sets if ds.name == dataset for it in ds.items
                 if it.id == item_id), None)
    if item is None:
        return _page("Item", f"<p class='err'>no item {_e(item_id)} in {_e(dataset)}</p>",
                     user.name)
    if _public(dataset) and any(v == 1 for v in item.labels.values()):
        return _page("Item", "<p class='err'>a violating row of a public set is not shown; "
                     "it is referenced by id only</p>", user.name)
    await run_in_threadpool(wb.drafts.audit.append_audit, user.name, "workbench.item_opened",
                            dataset, {"id": item_id})
    ctx = "".join(f"<p><i>{_e(m.author)}:</i> {_e(m.text)}</p>" for m in item.context)
    labels = ", ".join(f"{k}={v}" for k, v in sorted(item.labels.items()))
    return _page("Item", f"<section><p>{_e(dataset)} / <code>{_e(item_id)}</code> "
                 f"({_e(labels)})</p>"
                 f"{ctx}<p id='item-text'>{_e(item.text or '')}</p></section>", user.name)


def _last_eval(wb: Workbench, draft_id: str) -> dict[str, Any] | None:
    path = wb.drafts.get(draft_id).path.parent / "last_eval.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@router.post("/drafts/{draft_id}/file")
async def save_file(request: Request, draft_id: str, name: str = Form(...),
                    text: str = Form("")) -> Response:
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    try:
        v = await run_in_threadpool(_wb(request).drafts.write, draft_id, name, text, user.name)
    except ChildguardError as exc:
        return await _render_draft(request, user, draft_id, message=str(exc))
    return await _render_draft(request, user, draft_id, validation=v,
                               message=f"saved {name}" + ("" if v.ok else "; the draft does "
                                                          "not validate"))


@router.post("/drafts/{draft_id}/thresholds")
async def save_thresholds(request: Request, draft_id: str) -> Response:
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    form = await request.form()
    wb = _wb(request)
    try:
        v = await run_in_threadpool(_write_thresholds, wb.drafts, draft_id,
                                    {k: str(val) for k, val in form.items()}, user.name)
    except (ChildguardError, ValueError) as exc:
        return await _render_draft(request, user, draft_id, message=f"thresholds: {exc}")
    return await _render_draft(request, user, draft_id, validation=v,
                               message="saved thresholds" + ("" if v.ok else
                                                             "; the draft does not validate"))


def _write_thresholds(drafts: Drafts, draft_id: str, form: dict[str, str],
                      actor: str) -> Validation:
    """Thresholds go where the draft takes them from: calibration.yaml when it has one (it
    overrides policy.yaml), else policy.yaml's categories."""
    values: dict[str, dict[str, float]] = {}
    for key, raw in form.items():
        kind, _, code = key.partition("_")
        if kind in ("review", "block") and code:
            try:
                values.setdefault(code, {})[kind] = float(raw)
            except ValueError as exc:
                raise UserError(f"{kind} threshold of {code} must be a number; received "
                                f"{raw[:20]!r}") from exc
    cal_text = drafts.read(draft_id, "calibration.yaml")
    if cal_text.strip():
        cal = yaml.safe_load(cal_text)
        for code, t in values.items():
            cal.setdefault("categories", {}).setdefault(code, {}).update(t)
        return drafts.write(draft_id, "calibration.yaml", yaml.safe_dump(cal, sort_keys=False),
                            actor)
    spec = yaml.safe_load(drafts.read(draft_id, "policy.yaml"))
    for cat in spec.get("categories", []):
        if cat.get("code") in values:
            cat.setdefault("thresholds", {}).update(values[cat["code"]])
    return drafts.write(draft_id, "policy.yaml", yaml.safe_dump(spec, sort_keys=False), actor)


@router.post("/drafts/{draft_id}/try")
async def try_item(request: Request, draft_id: str, text: str = Form("")) -> Response:
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    wb = _wb(request)
    try:
        if not text.strip():
            raise UserError("type a message to try")
        draft = await run_in_threadpool(wb.drafts.load, draft_id)
        active = await run_in_threadpool(load_active_policy, wb.settings)
        views = await run_in_threadpool(wb.trial.try_text, text, [active, draft])
    except ChildguardError as exc:
        return await _render_draft(request, user, draft_id, message=f"try: {exc}")
    return await _render_draft(request, user, draft_id, tried=views)


@router.post("/drafts/{draft_id}/evaluate")
async def evaluate(request: Request, draft_id: str) -> Response:
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    wb = _wb(request)
    form = await request.form()
    names = [str(v) for v in form.getlist("datasets")]
    try:
        limit = max(1, min(int(str(form.get("limit") or 50)), 2000))
        if not names:
            raise UserError("choose at least one evaluation set")
        sets = await run_in_threadpool(wb.load_sets, names)
        draft = await run_in_threadpool(wb.drafts.load, draft_id)
        active = await run_in_threadpool(load_active_policy, wb.settings)
        result = await run_in_threadpool(wb.trial.evaluate, sets, active, draft, limit=limit)
    except (ChildguardError, ValueError) as exc:
        return await _render_draft(request, user, draft_id, message=f"evaluate: {exc}")
    path: Path = wb.drafts.get(draft_id).path.parent / "last_eval.json"
    path.write_text(json.dumps(result.as_dict(), indent=1), encoding="utf-8")
    return await _render_draft(request, user, draft_id, evaluated=result)


@router.post("/drafts/{draft_id}/promote")
async def promote(request: Request, draft_id: str, note: str = Form("")) -> Response:
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    wb = _wb(request)
    last = await run_in_threadpool(_last_eval, wb, draft_id)
    deltas = {k: v["delta"] for k, v in (last or {}).get("deltas", {}).items()}
    try:
        version = await run_in_threadpool(
            lambda: wb.drafts.promote(draft_id, user.name, user.role, deltas=deltas, note=note))
    except (Forbidden, UserError) as exc:
        return await _render_draft(request, user, draft_id, message=f"not promoted: {exc}")
    return _to_overview(f"promoted {version}")


@router.post("/rollback")
async def rollback(request: Request, version: str = Form(...)) -> Response:
    user = await _guard(request)
    if not isinstance(user, _User):
        return user
    wb = _wb(request)
    try:
        pid = (await run_in_threadpool(load_active_policy, wb.settings)).id
        await run_in_threadpool(lambda: wb.drafts.rollback(pid, version, user.name, user.role))
    except ChildguardError as exc:
        return _to_overview(f"not rolled back: {exc}")
    return _to_overview(f"rolled back to {version}")
