"""Bad input for `childguard.content`: every case is a typed error with a clear message.

All images are generated here from benign synthetic pixels (gradients, flat colours).
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from childguard.content import check_text, decode_image
from childguard.errors import ContentTooLarge, InvalidContent, UnsupportedMedia, UserError
from childguard.settings import LimitsSettings

LIMITS = LimitsSettings()


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None].repeat(w, 1)
    arr = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims width x height (8-bit greyscale)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


# -- images that must decode ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_allowed_formats_decode_to_rgb(fmt: str) -> None:
    decoded = decode_image(_encode(_gradient(), fmt), LIMITS)
    assert decoded.format == fmt
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (64, 48) == decoded.image.size


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((220, 30, 30), (30, 30, 220), (30, 220, 30))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode_image(data, LIMITS)
    assert decoded.n_frames == 3
    r, g, b = decoded.image.getpixel((10, 10))  # type: ignore[misc]
    assert r > 150 and g < 80 and b < 80  # the red first frame, not blue or green


def test_16_bit_png_is_scaled_not_clipped() -> None:
    arr = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    data = _encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = decode_image(data, LIMITS)
    px = np.asarray(decoded.image)
    assert decoded.image.mode == "RGB" and px.dtype == np.uint8
    assert px.min() < 10 and px.max() > 245  # the full range survives
    assert len(np.unique(px[:, :, 0])) > 100  # a gradient, not a saturated white image


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    data = _encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = decode_image(data, LIMITS)
    r, g, b = decoded.image.getpixel((16, 16))  # type: ignore[misc]
    assert decoded.image.mode == "RGB" and r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "1", "L", "I", "F"])
def test_other_modes_become_rgb(mode: str) -> None:
    base = _gradient().convert("L") if mode in ("I", "F") else _gradient()
    img = base.convert(mode)
    fmt = "TIFF" if mode in ("I", "F") else "PNG"
    decoded = decode_image(_encode(img, fmt), LIMITS)
    assert decoded.image.mode == "RGB"


# -- images that must fail ----------------------------------------------------------------


def test_zero_bytes() -> None:
    with pytest.raises(InvalidContent, match=r"empty \(0 bytes\)"):
        decode_image(b"", LIMITS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated(fmt: str) -> None:
    data = _encode(_gradient(256, 256), fmt)
    with pytest.raises(InvalidContent) as err:
        decode_image(data[: len(data) // 2], LIMITS)
    assert isinstance(err.value, UserError)
    assert "truncated" in str(err.value) or "cannot identify" in str(err.value)


def test_header_only_png() -> None:
    with pytest.raises(InvalidContent):
        decode_image(b"\x89PNG\r\n\x1a\n", LIMITS)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is plain text, not an image", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", b"\x00" * 64],
)
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(UnsupportedMedia, match="allowed formats: BMP, GIF, JPEG, PNG, TIFF, WEBP"):
        decode_image(data, LIMITS)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX"])
def test_real_image_in_a_format_we_do_not_accept(fmt: str) -> None:
    with pytest.raises(UnsupportedMedia, match=f"{fmt} is not supported"):
        decode_image(_encode(_gradient(), fmt), LIMITS)


def test_too_many_bytes() -> None:
    limits = LimitsSettings(max_image_bytes=1000)
    with pytest.raises(ContentTooLarge, match="at most 1000 bytes"):
        decode_image(_encode(_gradient(), "BMP"), limits)


@pytest.mark.parametrize(
    ("w", "h"),
    [(100_000, 100_000), (15_000, 15_000), (60_000, 10), (1, 4_000_000_000)],
)
def test_decompression_bomb_png_is_refused_before_decoding(w: int, h: int) -> None:
    data = _png_claiming(w, h)
    assert len(data) < 200
    tracemalloc.start()
    try:
        with pytest.raises(ContentTooLarge) as err:
            decode_image(data, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # nothing near w*h bytes was ever allocated
    msg = str(err.value)
    assert "too large" in msg or "at most" in msg


def test_gif_bomb_header_is_refused() -> None:
    # logical screen and frame 65535 x 65535 in a tiny GIF
    data = bytearray(_encode(Image.new("P", (8, 8), 0), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    idx = data.index(b"\x2c")  # image descriptor
    data[idx + 5 : idx + 9] = struct.pack("<HH", 65535, 65535)
    with pytest.raises((ContentTooLarge, InvalidContent)):
        decode_image(bytes(data), LIMITS)


def test_jpeg_bomb_header_is_refused() -> None:
    data = bytearray(_encode(_gradient(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)  # height, width
    with pytest.raises(ContentTooLarge, match="at most 50000000 pixels"):
        decode_image(bytes(data), LIMITS)


def test_custom_pixel_limits_are_quoted() -> None:
    limits = LimitsSettings(max_image_pixels=1000, max_image_side=100)
    with pytest.raises(ContentTooLarge, match="64x48 = 3072 pixels; at most 1000 pixels"):
        decode_image(_encode(_gradient(), "PNG"), limits)


# -- text ---------------------------------------------------------------------------------


def test_valid_text_passes() -> None:
    assert check_text("a friendly hello", LIMITS) == "a friendly hello"
    assert check_text(b"a friendly hello", LIMITS) == "a friendly hello"


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", b""])
def test_empty_text(text: str | bytes) -> None:
    with pytest.raises(InvalidContent, match="empty"):
        check_text(text, LIMITS)


@pytest.mark.parametrize("data", [b"caf\xe9", b"\xff\xfe\x00", b"ok \xc3\x28 no", b"\xed\xa0\x80"])
def test_invalid_utf8(data: bytes) -> None:
    with pytest.raises(InvalidContent, match="not valid UTF-8"):
        check_text(data, LIMITS)


def test_lone_surrogates() -> None:
    with pytest.raises(InvalidContent, match="surrogates"):
        check_text("abc\ud800def", LIMITS)


def test_text_over_the_limit() -> None:
    limits = LimitsSettings(max_text_chars=10)
    assert check_text("x" * 10, limits) == "x" * 10
    with pytest.raises(ContentTooLarge, match="11 characters; at most 10"):
        check_text("x" * 11, limits)
    with pytest.raises(ContentTooLarge, match="message has"):
        check_text("x" * 11, limits, field="message")
