"""Input checks of the pipeline (bad input raises UserError, for a 4xx) and the redactor."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pipeline_support import png_bytes

from childguard.errors import (
    ContentTooLarge,
    InvalidContent,
    ModelUnavailable,
    UnsupportedMedia,
    UserError,
)
from childguard.pipeline import Pipeline, Redactor, describe_exception
from childguard.schema import ContentItem, Decision, Message
from childguard.settings import LimitsSettings, Settings

PipelineFactory = Callable[..., Pipeline]


def test_prepare_normalises_text_and_decodes_the_image(make_pipeline: PipelineFactory):
    p = make_pipeline()
    prepared = p.prepare(ContentItem(text="Ｈｅｌｌｏ  W0rld", image=png_bytes()))
    assert prepared.text == "Ｈｅｌｌｏ  W0rld"
    assert prepared.normalized == "hello world"
    assert prepared.image is not None and prepared.image.mode == "RGB"
    assert prepared.image_format == "PNG" and prepared.image_size == (64, 48)
    # raw content stays out of the repr (it ends up in logs and tracebacks)
    assert "ello" not in repr(prepared)


@pytest.mark.parametrize(
    ("item", "error", "phrase"),
    [
        (ContentItem(text="   "), InvalidContent, "empty"),
        (ContentItem(text="x" * 101), ContentTooLarge, "at most 100"),
        (ContentItem(image=b"not an image at all"), UnsupportedMedia, "cannot identify image"),
        (ContentItem(image=png_bytes()[:60]), InvalidContent, "corrupt or truncated"),
        (ContentItem(text="hi", context=(Message(text=" "),)), InvalidContent, "context[0].text"),
        (ContentItem(text="hi", context=tuple(Message(text="m") for _ in range(4))),
         ContentTooLarge, "context has 4 messages; at most 3"),
        (ContentItem(image_ref="media-1"), InvalidContent, "cannot resolve stored media"),
    ],
)
def test_bad_input_raises_a_user_error(
    make_pipeline: PipelineFactory, pipeline_settings: Settings, item, error, phrase
):
    limits = LimitsSettings(max_text_chars=100, max_context_messages=3)
    p = make_pipeline(settings=pipeline_settings.model_copy(update={"limits": limits}))
    with pytest.raises(error) as info:
        p.classify(item)
    assert isinstance(info.value, UserError)
    assert phrase in str(info.value)


def test_image_ref_is_resolved_by_the_media_loader(make_pipeline: PipelineFactory):
    from childguard.models.reference_signals import ReferenceImageSafety

    stored = {"m-1": png_bytes(5)}
    p = make_pipeline(media_loader=stored.get, image_safety=ReferenceImageSafety(default=0.0))
    assert p.classify(ContentItem(image_ref="m-1")).decision is Decision.ALLOW
    with pytest.raises(InvalidContent, match="does not name a stored image"):
        p.classify(ContentItem(image_ref="m-2"))


def test_batch_error_names_the_bad_item(make_pipeline: PipelineFactory):
    p = make_pipeline()
    items = [ContentItem(id="ok", text="fine"), ContentItem(id="bad", image=b"\x00\x01")]
    with pytest.raises(UnsupportedMedia, match=r"items\[1\] \(id bad\)"):
        p.classify_batch(items)
    assert p.judge.calls == []  # type: ignore[union-attr]  # nothing ran


def test_redactor_removes_copied_runs_only():
    red = Redactor(["The quick brown fox jumps over the lazy dog", "short"])
    assert red("model said: quick brown fox jumps!") == "model said:[content removed]!"
    assert red("a short answer") == "a [content removed] answer"
    assert red("nothing in common here") == "nothing in common here"
    assert Redactor([])("anything") == "anything"
    # secrets shorter than 4 visible characters are ignored (they would redact everything)
    assert Redactor(["a"])("a cat") == "a cat"


def test_describe_exception_gives_a_code_and_keeps_only_our_messages():
    red = Redactor(["confidential message body"])
    # another library's message may hold content, a traceback or an address: not sent
    assert describe_exception(KeyError("confidential message body"), red) == \
        "stage_failed (KeyError)"
    assert describe_exception(ContentTooLarge("text has 9 characters"), red) == (
        "invalid_input (ContentTooLarge): text has 9 characters"
    )
    assert describe_exception(ModelUnavailable("judge weights missing"), red) == \
        "model_unavailable (ModelUnavailable): judge weights missing"
    assert describe_exception(RuntimeError(), red) == "stage_failed (RuntimeError)"
    assert describe_exception(TimeoutError("x"), red).startswith("timeout")
    from childguard.errors import DependencyError
    from childguard.pipeline import ERROR_CODES, error_code

    produced = {error_code(e) for e in (KeyError(), ContentTooLarge("x"), ModelUnavailable("x"),
                                        DependencyError("x"), TimeoutError())}
    assert produced <= set(ERROR_CODES)


def test_describe_exception_unwraps_and_sanitises_ray_errors():
    class RayTaskError(Exception):  # the shape of ray.exceptions.RayTaskError: text + cause
        def __init__(self, cause: BaseException) -> None:
            super().__init__("\x1b[36mray::Judge.judge()\x1b[39m (pid=123, ip=10.0.0.7, "
                             "actor_id=3f2a9c1e0b7d4e5f6a7b8c9d0e1f2a3b)\nTraceback ...")
            self.cause = cause

    class ActorDiedError(Exception):
        pass

    red = Redactor(["confidential message body"])
    err = describe_exception(RayTaskError(ValueError("confidential message body")), red)
    assert err == "stage_failed (ValueError)"
    err = describe_exception(RayTaskError(ModelUnavailable(
        "\x1b[31mweights gone\x1b[0m on 10.0.0.7:6379 for confidential message body")), red)
    assert err == "model_unavailable (ModelUnavailable): weights gone on [address] for " \
        "[content removed]"
    assert describe_exception(ActorDiedError("actor 3f2a... died"), red) == \
        "worker_died (ActorDiedError)"
    for e in (err,):
        assert "\x1b" not in e and "10.0.0.7" not in e and "\n" not in e
