"""Input checks shared by the API, the CLI, the hasher and the models.

Everything that touches raw bytes from a client passes here first, so a bad image or bad text
fails once, early, with a typed error that says what was received and what is allowed, and no
decoder downstream sees unbounded input. Pillow's own decompression-bomb guard is replaced by an
explicit pixel limit checked from the header *before* pixels are decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from childguard.errors import ContentTooLarge, InvalidContent, UnsupportedMedia
from childguard.settings import LimitsSettings

#: formats we decode; anything else is 415
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class DecodedImage:
    """A decoded, orientation-corrected RGB image plus what we learned while decoding it."""

    image: Image.Image
    format: str
    width: int
    height: int
    n_frames: int
    raw_bytes: int


def check_text(text: str | bytes, limits: LimitsSettings, field: str = "text") -> str:
    """UTF-8, not empty, within the length limit. Returns the text as str."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidContent(
                f"{field} is not valid UTF-8 (byte {exc.start}: {exc.reason}); send UTF-8 text"
            ) from exc
    if len(text) > limits.max_text_chars:
        raise ContentTooLarge(
            f"{field} has {len(text)} characters; at most {limits.max_text_chars} are allowed"
        )
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise InvalidContent(f"{field} contains lone surrogates; send valid Unicode text")
    if not text.strip():
        raise InvalidContent(f"{field} is empty; send at least one non-space character")
    return text


def decode_image(data: bytes, limits: LimitsSettings) -> DecodedImage:
    """Decode untrusted image bytes safely, or raise a typed error.

    Checks, in order: size in bytes, a recognised format, dimensions from the header (pixel
    bomb), then a full decode (truncation). Animated images use their first frame; 16-bit,
    CMYK, palette and alpha modes are converted to 8-bit RGB; EXIF orientation is applied.
    """
    if not data:
        raise InvalidContent("image is empty (0 bytes); send a JPEG, PNG, WebP, GIF, BMP or TIFF")
    if len(data) > limits.max_image_bytes:
        raise ContentTooLarge(
            f"image is {len(data)} bytes; at most {limits.max_image_bytes} bytes are allowed"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened: Image.Image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ContentTooLarge(
            f"image dimensions are too large ({exc}); at most {limits.max_image_pixels} pixels "
            f"and {limits.max_image_side} per side are allowed"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UnsupportedMedia(
            f"cannot identify image ({len(data)} bytes, starts {data[:8].hex()}); allowed "
            f"formats: {', '.join(sorted(ALLOWED_FORMATS))}"
        ) from exc
    img = opened
    fmt = (img.format or "").upper()
    if fmt not in ALLOWED_FORMATS:
        raise UnsupportedMedia(
            f"image format {fmt or 'unknown'} is not supported; allowed: "
            f"{', '.join(sorted(ALLOWED_FORMATS))}"
        )
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidContent(f"image has invalid dimensions {width}x{height}")
    if max(width, height) > limits.max_image_side or width * height > limits.max_image_pixels:
        raise ContentTooLarge(
            f"image is {width}x{height} = {width * height} pixels; at most "
            f"{limits.max_image_pixels} pixels and {limits.max_image_side} per side are allowed"
        )
    n_frames = int(getattr(img, "n_frames", 1) or 1)
    try:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        rgb = _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidContent(
            f"image data is corrupt or truncated ({fmt}, {width}x{height}, {len(data)} bytes): "
            f"{exc}"
        ) from exc
    return DecodedImage(
        image=rgb, format=fmt, width=rgb.width, height=rgb.height, n_frames=n_frames,
        raw_bytes=len(data),
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clipping to white
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) or 1.0
        img = Image.fromarray((arr * (255.0 / hi)).clip(0, 255).astype("uint8"), mode="L")
    elif mode == "F":
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).clip(0, 255).astype("uint8"), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img
