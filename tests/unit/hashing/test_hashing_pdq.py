"""PDQ against Meta's reference hashes and test photos (acceptance points of the hashing issue)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hashing_support import KODAK, PDQ_DIR

from childguard.errors import InvalidContent, UnsupportedMedia
from childguard.hashing.hashers import (
    guess_signal_type,
    hash_image_bytes,
    normalize_hash,
    pdq_bits_to_hex,
)
from childguard.hashing.index import hamming, pack_hex
from childguard.settings import LimitsSettings

LIMITS = LimitsSettings()


def _dist(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _reference() -> dict[str, tuple[str, int]]:
    text = (PDQ_DIR / "reference_hashes" / "pdq_python_README.md").read_text()
    ref = {}
    for m in re.finditer(r"^([0-9a-f]{64}),(\d+),\S*/([^/\s]+)$", text, re.M):
        ref[m.group(3)] = (m.group(1), int(m.group(2)))
    return ref


def _pdq(path: Path, *, dihedral: bool = False):  # type: ignore[no-untyped-def]
    return hash_image_bytes(path.read_bytes(), LIMITS, dihedral=dihedral)


def test_bridge_mods_within_10_bits_of_reference(images_dir: Path) -> None:
    ref = _reference()
    assert len(ref) == 12
    for name, (ref_hash, ref_quality) in ref.items():
        h = _pdq(PDQ_DIR / "bridge-mods" / name)
        assert h.pdq is not None
        assert _dist(h.pdq, ref_hash) <= 10, name
        assert h.pdq_quality is not None and h.pdq_quality >= 80 and ref_quality >= 80


def test_every_bridge_edit_matches_the_original(images_dir: Path) -> None:
    files = sorted((PDQ_DIR / "bridge-mods").glob("*.jpg"))
    orig = _pdq(PDQ_DIR / "bridge-mods" / "aaa-orig.jpg").pdq
    assert orig is not None
    for f in files:
        pdq = _pdq(f).pdq
        assert pdq is not None and _dist(pdq, orig) <= 31, f.name


def test_dihedral_copies_match_only_with_dihedral_hashes(images_dir: Path) -> None:
    files = sorted((PDQ_DIR / "reg-test-input" / "dih").glob("*.jpg"))
    assert len(files) == 8
    orig = _pdq(files[0], dihedral=True)
    assert len(orig.pdq_dihedral) == 8
    far = 0
    for f in files:
        h = _pdq(f)
        assert h.pdq is not None
        best = min(_dist(h.pdq, d) for d in orig.pdq_dihedral)
        assert best <= 31, f.name
        far += _dist(h.pdq, orig.pdq or "") > 31
    assert far >= 6  # without dihedral matching, the rotated/flipped copies would be missed


def test_kodak_photos_do_not_match_each_other(images_dir: Path) -> None:
    hashes = [h.pdq for h in (_pdq(f) for f in sorted(KODAK.glob("*.png")))]
    assert len(hashes) == 24
    packed = pack_hex([h or "" for h in hashes])
    for i, j in itertools.combinations(range(24), 2):
        assert int(hamming(packed[i], packed[j])) > 31, (i, j)


def test_bits_to_hex_order() -> None:
    bits = [0] * 256
    bits[0] = 1
    assert pdq_bits_to_hex(bits) == "80" + "0" * 62
    with pytest.raises(ValueError):
        pdq_bits_to_hex([0] * 255)


def test_exact_hashes_and_unreadable_image() -> None:
    with pytest.raises(UnsupportedMedia):
        hash_image_bytes(b"not an image at all", LIMITS)
    with pytest.raises(InvalidContent):
        hash_image_bytes(b"", LIMITS)


@pytest.mark.parametrize(
    ("st", "value", "reason"),
    [
        ("pdq", "ab" * 31, "64 hex digits"),
        ("md5", "zz" * 16, "hexadecimal"),
        ("photo", "ab" * 16, "unknown signal type"),
    ],
)
def test_normalize_hash_rejects(st: str, value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_hash(st, value)


def test_normalize_and_guess() -> None:
    assert normalize_hash("PHOTO_MD5", " 0x" + "AB" * 16) == "ab" * 16
    assert guess_signal_type("ab" * 16) == "md5"
    assert guess_signal_type("ab" * 32) == "pdq"
    with pytest.raises(ValueError, match="cannot tell"):
        guess_signal_type("abc")
