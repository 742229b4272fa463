"""`childguard classify`: one item through the cascade, in-process or against the server.

Why both modes in one command: in-process runs the very `Pipeline` the service runs (same
verdict, no server needed: demos, debugging a policy, scripting), and `--url` checks a running
deployment end to end with the same output, so the two can be compared item for item.

Input: `--text`, `--image PATH`, or both; `--context-file` is JSONL, one earlier message per
line (`{"author": "...", "text": "..."}`, oldest first). Output: a short summary, or the
`Verdict` as JSON with `--json`. Exit codes come from `cli.main`: 2 for bad input (including a
4xx from the server), 3 when the server or a model is unavailable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from childguard.errors import DependencyError, UserError
from childguard.schema import ContentItem, Message, Verdict

#: HTTP path of the classify endpoint on the server
CLASSIFY_PATH = "/v1/classify"


def classify(
    ctx: typer.Context,
    text: str | None = typer.Option(None, "--text", help="the message text"),
    image: Path | None = typer.Option(None, "--image", help="path to an image file"),
    context_file: Path | None = typer.Option(
        None, "--context-file", help='JSONL of earlier messages: {"author": ..., "text": ...}'
    ),
    item_id: str | None = typer.Option(None, "--id", help="item id (default: random)"),
    source: str | None = typer.Option(None, "--source", help="where the item comes from"),
    url: str | None = typer.Option(
        None, "--url", help="base URL of a running server (default: classify in-process)"
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="CHILDGUARD_API_KEY", help="API key for --url (role service)"
    ),
    timeout: float = typer.Option(120.0, "--timeout", help="HTTP timeout in seconds (--url)"),
    json_out: bool = typer.Option(False, "--json", help="print the Verdict as JSON"),
) -> None:
    """Classify a text, an image or both, and print the verdict."""
    item = build_item(text=text, image=image, context_file=context_file, item_id=item_id,
                      source=source)
    if url:
        verdict = classify_remote(url, item, api_key=api_key, timeout=timeout)
    else:
        from childguard.cli.main import get_settings
        from childguard.pipeline import build_pipeline

        settings = get_settings(ctx)
        with build_pipeline(settings) as pipeline:
            verdict = pipeline.classify(item)
            _print(verdict, json_out)  # before closing the models
        return
    _print(verdict, json_out)


def _print(verdict: Verdict, json_out: bool) -> None:
    typer.echo(verdict.model_dump_json(indent=2) if json_out else summarize(verdict))


app = classify


def build_item(
    *,
    text: str | None,
    image: Path | None,
    context_file: Path | None,
    item_id: str | None = None,
    source: str | None = None,
) -> ContentItem:
    """The ContentItem for the command-line arguments; bad arguments raise UserError."""
    if text is None and image is None:
        raise UserError("nothing to classify: give --text, --image or both")
    data: bytes | None = None
    if image is not None:
        if not image.is_file():
            raise UserError(f"--image {image} is not a readable file")
        data = image.read_bytes()
    context = read_context(context_file) if context_file is not None else ()
    fields: dict[str, Any] = {"text": text, "image": data, "context": context, "source": source}
    if item_id:
        fields["id"] = item_id
    try:
        return ContentItem(**fields)
    except ValidationError as exc:
        raise UserError(f"invalid item: {_first_error(exc)}") from exc


def read_context(path: Path) -> tuple[Message, ...]:
    """Earlier messages from a JSONL file, oldest first; blank lines are skipped."""
    if not path.is_file():
        raise UserError(f"--context-file {path} is not a readable file")
    try:
        lines = path.read_text("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"--context-file {path} is not UTF-8: {exc.reason}") from exc
    messages = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not JSON ({exc.msg}); expected one object per line "
                            'like {"author": "sender", "text": "..."}') from exc
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{n}: a JSON {type(obj).__name__}; expected an object with "
                            "'text' (and optionally 'author', 'sent_at')")
        try:
            messages.append(Message.model_validate(obj))
        except ValidationError as exc:
            raise UserError(f"{path}:{n}: {_first_error(exc)}") from exc
    return tuple(messages)


def classify_remote(
    url: str, item: ContentItem, *, api_key: str | None, timeout: float = 120.0
) -> Verdict:
    """POST the item to `<url>/v1/classify` and return the server's Verdict."""
    import httpx

    endpoint = url.rstrip("/") + CLASSIFY_PATH
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = item.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    body["id"] = item.id
    try:
        resp = httpx.post(endpoint, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DependencyError(f"cannot reach {endpoint}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code in (401, 403):
        raise UserError(
            f"{endpoint} refused the request (HTTP {resp.status_code}): "
            f"{_server_message(resp)}; pass --api-key with a key of role 'service'"
        )
    if 400 <= resp.status_code < 500:
        raise UserError(f"{endpoint} rejected the item (HTTP {resp.status_code}): "
                        f"{_server_message(resp)}")
    if resp.status_code >= 500:
        raise DependencyError(f"{endpoint} failed (HTTP {resp.status_code}): "
                              f"{_server_message(resp)}")
    try:
        return Verdict.model_validate_json(resp.content)
    except ValidationError as exc:
        raise DependencyError(
            f"{endpoint} answered HTTP {resp.status_code} with something that is not a Verdict: "
            f"{_first_error(exc)}"
        ) from exc


def summarize(v: Verdict) -> str:
    """A few readable lines: decision, categories that matter, rationale, timings."""
    lines = [
        f"item {v.item_id}: {v.decision.value.upper()}"
        + (" + REPORT" if v.report else "")
        + (f" (status {v.status.value})" if v.status.value != "ok" else "")
        + (" [judged]" if v.judged else " [not judged]"),
    ]
    for c in sorted(v.categories, key=lambda c: -c.score)[:6]:
        lines.append(f"  {c.code:<24} {c.score:6.3f}  {c.decision.value:<6}  ({c.source})")
    for m in v.hash_matches:
        kind = "allowlist" if m.negative else "bank"
        lines.append(f"  hash {kind} {m.bank}: {m.signal_type} distance {m.distance}")
    if v.rationale:
        lines.append(f"rationale: {v.rationale}")
    for e in v.errors:
        lines.append(f"error: {e}")
    if v.timings_ms:
        lines.append("timings ms: " + ", ".join(f"{k} {t:.1f}" for k, t in v.timings_ms.items()))
    lines.append(f"policy {v.policy_id}@{v.policy_version}")
    return "\n".join(lines)


def _server_message(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300] or "(empty body)"
    if isinstance(data, dict):
        for key in ("detail", "error", "message"):
            if key in data:
                return str(data[key])[:500]
    return json.dumps(data)[:500]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(item)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {err['msg']}{more}"
