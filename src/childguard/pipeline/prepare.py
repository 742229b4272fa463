"""Stage 0, prepare: input checks, image decode, text normalisation, on the host that received
the item (the ingress on Ray), before anything is queued.

Why first and apart: bad input must fail as a 4xx that says what was wrong and what is allowed
(`UserError`), before any model spends time on it; every later stage may assume checked,
decoded, normalised input.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from childguard.content import check_text, decode_image
from childguard.errors import ContentTooLarge, InvalidContent
from childguard.hashing.video import hash_video, video_limits
from childguard.pipeline.results import PreparedItem, ms_since
from childguard.schema import ContentItem
from childguard.settings import LimitsSettings

__all__ = ["prepare_item", "word_windows"]


def prepare_item(item: ContentItem, limits: LimitsSettings, normalize: Callable[[str], str],
                 media_loader: Callable[[str], bytes | None] | None = None, *,
                 video_seconds_per_hash: float = 1.0) -> PreparedItem:
    """Raises `UserError` for bad input; `media_loader` resolves an `image_ref`. A video is
    decoded here once: its vPDQ hashes (sampled every `video_seconds_per_hash` s) and up to
    `limits.max_video_keyframes` keyframes travel on; its bytes do not."""
    t0 = time.perf_counter()
    text = check_text(item.text, limits) if item.text is not None else None
    if len(item.context) > limits.max_context_messages:
        raise ContentTooLarge(
            f"context has {len(item.context)} messages; at most "
            f"{limits.max_context_messages} are allowed"
        )
    for i, msg in enumerate(item.context):
        check_text(msg.text, limits, field=f"context[{i}].text")
    total_context = sum(len(m.text) for m in item.context)
    if total_context > 4 * limits.max_text_chars:
        raise ContentTooLarge(
            f"context has {total_context} characters in total; at most "
            f"{4 * limits.max_text_chars} are allowed"
        )
    image_bytes = item.image
    if image_bytes is None and item.image_ref is not None:
        if media_loader is None:
            raise InvalidContent(
                "image_ref was given but this pipeline cannot resolve stored media; send the "
                "image bytes (base64 'image') instead"
            )
        image_bytes = media_loader(item.image_ref)
        if image_bytes is None:
            raise InvalidContent(f"image_ref {item.image_ref!r} does not name a stored image")
    decoded = decode_image(image_bytes, limits) if image_bytes is not None else None
    video = None
    if item.video is not None:
        video = hash_video(item.video, seconds_per_hash=video_seconds_per_hash,
                           limits=video_limits(limits), keyframes=limits.max_video_keyframes)
    normalized = normalize(text) if text is not None else None
    return PreparedItem(
        item_id=item.id,
        text=text,
        normalized=normalized,
        context=tuple(item.context),
        image_bytes=image_bytes,
        image=decoded.image if decoded else None,
        image_format=decoded.format if decoded else None,
        image_size=(decoded.width, decoded.height) if decoded else None,
        video=video,
        external_id=item.external_id,
        source=item.source,
        prepare_ms=ms_since(t0),
    )


def word_windows(text: str, size: int) -> list[str]:
    """Half-overlapping windows of `size` words of a text longer than `size` words (none for
    a shorter text, or when `size` is 0); the last window ends at the last word."""
    words = text.split()
    if size <= 0 or len(words) <= size:
        return []
    step = max(1, size // 2)
    starts = [*range(0, len(words) - size, step), len(words) - size]
    return [" ".join(words[i:i + size]) for i in dict.fromkeys(starts)]
