"""`childguard classify`: argument handling, the remote client, and the output.

The remote client is exercised against a small loopback HTTP server that runs the real
in-process `Pipeline` (reference models) behind `POST /v1/classify`, so `--url` and in-process
give the same verdict. The Ray Serve app itself is tested by the serving tests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pipeline_support import png_bytes, probe_marker

from childguard.cli.classify import build_item, classify_remote, read_context, summarize
from childguard.cli.main import main
from childguard.errors import DependencyError, UserError
from childguard.pipeline import Pipeline
from childguard.schema import ContentItem, Decision, Verdict


@pytest.fixture
def server(make_pipeline: Callable[..., Pipeline]) -> Iterator[tuple[str, dict[str, object]]]:
    pipeline = make_pipeline()
    seen: dict[str, object] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            seen["path"] = self.path
            seen["auth"] = self.headers.get("Authorization")
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Authorization") != "Bearer good-key":
                self._send(401, json.dumps({"detail": "unknown API key"}))
                return
            body = json.loads(raw)
            seen["body_keys"] = sorted(body)
            if body.get("text") == "boom":
                self._send(500, json.dumps({"detail": "internal error"}))
                return
            try:
                verdict = pipeline.classify(ContentItem.model_validate(body))
            except UserError as exc:
                self._send(422, json.dumps({"detail": str(exc)}))
                return
            self._send(200, verdict.model_dump_json())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_build_item_reads_image_and_context(tmp_path: Path):
    img = tmp_path / "photo.png"
    img.write_bytes(png_bytes())
    ctx = tmp_path / "ctx.jsonl"
    ctx.write_text('{"author": "sender", "text": "hello"}\n\n{"text": "and you?"}\n')
    item = build_item(text="hi", image=img, context_file=ctx, item_id="i-1", source="cli")
    assert item.id == "i-1" and item.source == "cli" and item.image == png_bytes()
    assert [(m.author, m.text) for m in item.context] == [("sender", "hello"),
                                                          ("other", "and you?")]


@pytest.mark.parametrize(
    ("content", "phrase"),
    [("not json\n", ":1: not JSON"), ('["a"]\n', ":1: a JSON list"),
     ('{"text": "ok"}\n{"txt": "typo"}\n', ":2: ")],
)
def test_bad_context_file_is_a_user_error(tmp_path: Path, content: str, phrase: str):
    ctx = tmp_path / "ctx.jsonl"
    ctx.write_text(content)
    with pytest.raises(UserError, match=phrase):
        read_context(ctx)


def test_missing_inputs_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="nothing to classify"):
        build_item(text=None, image=None, context_file=None)
    with pytest.raises(UserError, match="not a readable file"):
        build_item(text=None, image=tmp_path / "missing.png", context_file=None)


def test_cli_without_content_exits_2(capsys: pytest.CaptureFixture[str]):
    assert main(["classify"]) == 2
    assert "nothing to classify" in capsys.readouterr().err


def test_remote_classify_returns_the_servers_verdict(
    server: tuple[str, dict[str, object]], make_pipeline: Callable[..., Pipeline]
):
    url, seen = server
    item = ContentItem(id="r-1", text=f"hi {probe_marker('grooming')} cg-test:grooming")
    remote = classify_remote(url + "/", item, api_key="good-key")
    local = make_pipeline().classify(item)
    assert seen["path"] == "/v1/classify" and seen["auth"] == "Bearer good-key"
    assert remote.decision is Decision.BLOCK and remote.item_id == "r-1"
    skip = {"created_at", "timings_ms", "signals"}
    assert remote.model_dump(exclude=skip) == local.model_dump(exclude=skip)
    assert seen["body_keys"] == ["id", "text"]  # defaults are not sent


def test_remote_cli_prints_json_verdict(
    server: tuple[str, dict[str, object]], capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    url, _ = server
    img = tmp_path / "photo.png"
    img.write_bytes(png_bytes())
    rc = main(["classify", "--text", "see you at practice", "--image", str(img), "--url", url,
               "--api-key", "good-key", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    verdict = Verdict.model_validate_json(out)
    assert verdict.decision in (Decision.ALLOW, Decision.REVIEW)


@pytest.mark.parametrize(
    ("text", "key", "error", "phrase"),
    [("hello", "bad-key", UserError, "HTTP 401"),
     ("   ", "good-key", UserError, "HTTP 422"),
     ("boom", "good-key", DependencyError, "HTTP 500")],
)
def test_remote_errors_map_to_exit_classes(server, text, key, error, phrase):
    url, _ = server
    with pytest.raises(error, match=phrase):
        classify_remote(url, ContentItem(text=text), api_key=key)


def test_unreachable_server_is_a_dependency_error():
    with pytest.raises(DependencyError, match="cannot reach"):
        classify_remote("http://127.0.0.1:9", ContentItem(text="hi"), api_key=None, timeout=2)


def test_summary_is_readable(make_pipeline: Callable[..., Pipeline]):
    v = make_pipeline().classify(ContentItem(text=f"{probe_marker('sextortion')} "
                                                  "cg-test:sextortion"))
    text = summarize(v)
    assert text.splitlines()[0].endswith("BLOCK + REPORT [judged]")
    assert "sextortion" in text and "rationale:" in text and "policy child_safety@" in text
