"""Content hashes of an image: PDQ (perceptual, with quality) and MD5/SHA-256 (exact bytes).

PDQ comes from `pdqhash` (Meta's C++ reference implementation). Its bit vector is turned into
the 64-hex-digit form ThreatExchange, HMA and NCMEC-style lists use (checked against the
reference hashes of Meta's test photos in the tests), so hashes we compute match hashes others
share. Images are decoded by `childguard.content.decode_image`, the one place raw bytes are
checked, so an unreadable image raises the same typed error everywhere.

Signal types are a closed set (`SIGNAL_TYPES`); `normalize_hash` is the single validator for
hash strings from users and files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from childguard.content import decode_image
from childguard.settings import LimitsSettings

PDQ = "pdq"
MD5 = "md5"
SHA256 = "sha256"
#: signal type -> number of hex digits
SIGNAL_TYPES: dict[str, int] = {PDQ: 64, MD5: 32, SHA256: 64}
EXACT_TYPES = (MD5, SHA256)

#: aliases used by HMA / ThreatExchange / NCMEC exports
SIGNAL_ALIASES: dict[str, str] = {
    "pdq": PDQ,
    "hash_pdq": PDQ,
    "pdq_hash": PDQ,
    "photo_pdq": PDQ,
    "md5": MD5,
    "hash_md5": MD5,
    "photo_md5": MD5,
    "video_md5": MD5,
    "sha256": SHA256,
    "sha-256": SHA256,
    "hash_sha256": SHA256,
}

_HEX = re.compile(r"^[0-9a-f]+$")

#: images larger than this on a side are shrunk first, as Meta's reference Python hasher does
#: (PIL thumbnail to 512): with it our hashes of the bridge test photos are within 2 bits of the
#: published reference; without it up to 12 bits off. It also bounds hashing time.
_PDQ_MAX_SIDE = 512

#: the order `pdqhash.compute_dihedral` returns its 8 hashes in
DIHEDRAL_NAMES = ("orig", "rot90", "rot180", "rot270", "flipv", "fliph", "rot90flipv", "rot90fliph")


def canonical_signal_type(name: str) -> str:
    """Map a signal-type name (any case, HMA/ThreatExchange aliases) to ours, or ValueError."""
    key = name.strip().lower()
    if key in SIGNAL_ALIASES:
        return SIGNAL_ALIASES[key]
    raise ValueError(
        f"unknown signal type {name!r}; allowed: {', '.join(SIGNAL_TYPES)} "
        f"(aliases: {', '.join(sorted(SIGNAL_ALIASES))})"
    )


def normalize_hash(signal_type: str, value: str) -> str:
    """Lower-case hex of the right length for the signal type, or ValueError saying why."""
    st = canonical_signal_type(signal_type)
    v = value.strip().lower()
    if v.startswith("0x"):
        v = v[2:]
    want = SIGNAL_TYPES[st]
    if len(v) != want:
        raise ValueError(f"{st} hash must be {want} hex digits; received {len(v)} characters")
    if not _HEX.match(v):
        raise ValueError(f"{st} hash must be hexadecimal (0-9, a-f); received {value.strip()!r}")
    return v


def guess_signal_type(value: str) -> str:
    """The signal type of a bare hash by its length: 32 -> md5, 64 -> pdq (not sha256)."""
    n = len(value.strip().removeprefix("0x"))
    if n == 32:
        return MD5
    if n == 64:
        return PDQ
    raise ValueError(
        f"cannot tell the signal type of a {n}-character hash; expected 32 (md5) or 64 (pdq) "
        "hex digits, or name the type (e.g. --signal-type sha256)"
    )


@dataclass(frozen=True)
class ImageHashes:
    """Every hash of one image. `pdq_dihedral` holds the 8 rotations/flips when asked for."""

    md5: str
    sha256: str
    pdq: str | None
    pdq_quality: int | None
    pdq_dihedral: tuple[str, ...] = ()
    width: int = 0
    height: int = 0

    def as_dict(self) -> dict[str, str]:
        out = {MD5: self.md5, SHA256: self.sha256}
        if self.pdq is not None:
            out[PDQ] = self.pdq
        return out


def exact_hashes(data: bytes) -> dict[str, str]:
    return {MD5: hashlib.md5(data).hexdigest(), SHA256: hashlib.sha256(data).hexdigest()}


def pdq_bits_to_hex(bits: np.ndarray) -> str:
    """pdqhash's 256-entry 0/1 vector -> ThreatExchange hex (bit 255 first, as the C++ tool)."""
    arr = np.asarray(bits, dtype=np.uint8).reshape(-1)
    if arr.size != 256:
        raise ValueError(f"PDQ bit vector must have 256 entries; received {arr.size}")
    return np.packbits(arr).tobytes().hex()


def pdq_of_image(image: Image.Image, *, dihedral: bool = False) -> tuple[str, int, tuple[str, ...]]:
    """(hex, quality, dihedral hexes) of an RGB PIL image."""
    import pdqhash  # C extension: imported lazily so the CLI starts fast

    img = image if image.mode == "RGB" else image.convert("RGB")
    if max(img.size) > _PDQ_MAX_SIDE:
        img = img.copy()
        img.thumbnail((_PDQ_MAX_SIDE, _PDQ_MAX_SIDE), Image.Resampling.LANCZOS)
    arr = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    if dihedral:
        vectors, quality = pdqhash.compute_dihedral(arr)
        hexes = tuple(pdq_bits_to_hex(v) for v in vectors)
        return hexes[0], int(quality), hexes
    vector, quality = pdqhash.compute(arr)
    return pdq_bits_to_hex(vector), int(quality), ()


def hash_image_bytes(data: bytes, limits: LimitsSettings, *, dihedral: bool = False) -> ImageHashes:
    """Decode (typed errors for unreadable input) and hash an image."""
    exact = exact_hashes(data)
    decoded = decode_image(data, limits)
    pdq, quality, dih = pdq_of_image(decoded.image, dihedral=dihedral)
    return ImageHashes(
        md5=exact[MD5], sha256=exact[SHA256], pdq=pdq, pdq_quality=quality, pdq_dihedral=dih,
        width=decoded.width, height=decoded.height,
    )
