"""normalize_text: table tests on benign words and properties (hypothesis)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from childguard.normalize import HOMOGLYPHS, normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello World", "hello world"),
        ("ｈｅｌｌｏ ｆｒｉｅｎｄ", "hello friend"),  # full-width
        ("𝐛𝐨𝐥𝐝 𝘪𝘵𝘢𝘭𝘪𝘤", "bold italic"),  # mathematical styled letters
        ("ﬁne ﬂower", "fine flower"),  # ligatures
        ("gar\u200bden pa\u200crty\u2060", "garden party"),  # zero-width characters
        ("soft\u00adware\x07 bell", "software bell"),  # soft hyphen, control char
        ("line\none\ttab\r\n", "line one tab"),
        ("Ηello wоrld", "hello world"),  # Greek Eta, Cyrillic o
        ("раураl login", "paypal login"),  # Cyrillic inside a Latin word
        ("ΡΙΖΖΑ party tonight", "pizza party tonight"),  # Greek capitals, Latin text
        ("h3ll0 fr13nd", "hello friend"),
        ("n00b wh@t", "noob what"),
        ("p a s s w o r d", "password"),
        ("s.e.c.r.e.t", "secret"),
        ("g-a-r-d-e-n", "garden"),
        ("m 3 e t", "meet"),
        ("m🔹e🔹e🔹t tomorrow", "meet tomorrow"),  # emoji between letters
        ("lo\u2764\ufe0fve you", "lo ve you"),  # two letters only: not joined, but split
        ("hi👋there 🙂", "hi there 🙂"),
        ("5°C outside", "5°c outside"),  # a symbol after a digit stays
        ("  many    spaces  ", "many spaces"),
    ],
)
def test_table(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "meet at 5pm on 2024-01-05",
        "covid19 mp3 b2b 4x4 1st 2nd",
        "call 1 2 3",
        "i am a cat",
        "don't stop",
        "wow!!! great",
        "email me @home for $5",
    ],
)
def test_ordinary_text_is_only_casefolded(text: str) -> None:
    assert normalize_text(text) == text.casefold()


def test_non_latin_text_keeps_its_script() -> None:
    # a mostly Cyrillic or Greek text is not "translated" into Latin look-alikes
    assert normalize_text("Привет мир") == "привет мир"
    assert normalize_text("Καλημέρα κόσμε") == "καλημέρα κόσμε"


def test_empty_and_blank() -> None:
    assert normalize_text("") == ""
    assert normalize_text(" \u200b\t\n") == ""


# -- properties -------------------------------------------------------------------------

WORDS = st.lists(st.from_regex(r"[a-z]{2,9}", fullmatch=True), min_size=1, max_size=8)
_LATIN_TO_CYRILLIC = {"a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у"}
_INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\x00", "\x1b"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_idempotent_and_clean(text: str) -> None:
    out = normalize_text(text)
    assert normalize_text(out) == out
    assert out == out.strip()
    assert "  " not in out
    assert not any(unicodedata.category(ch) in ("Cf", "Cc") for ch in out)


@settings(max_examples=150, deadline=None)
@given(WORDS)
def test_plain_lowercase_words_unchanged(words: list[str]) -> None:
    text = " ".join(words)
    assert normalize_text(text) == text


@settings(max_examples=100, deadline=None)
@given(WORDS, st.data())
def test_invisible_characters_do_not_change_the_result(
    words: list[str], data: st.DataObject
) -> None:
    text = " ".join(words)
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(chars)))
        chars.insert(pos, data.draw(st.sampled_from(_INVISIBLE)))
    assert normalize_text("".join(chars)) == normalize_text(text)


@settings(max_examples=100, deadline=None)
@given(WORDS, st.data())
def test_homoglyphs_in_latin_words_are_undone(words: list[str], data: st.DataObject) -> None:
    text = " ".join(words)
    spoofed = []
    for word in words:
        # swap look-alike letters, keeping at least one Latin letter in each word
        keep = data.draw(st.integers(0, len(word) - 1))
        spoofed.append(
            "".join(
                _LATIN_TO_CYRILLIC.get(ch, ch) if i != keep and data.draw(st.booleans()) else ch
                for i, ch in enumerate(word)
            )
        )
    assert normalize_text(" ".join(spoofed)) == text


@settings(max_examples=100, deadline=None)
@given(WORDS)
def test_upper_and_fullwidth_forms_agree(words: list[str]) -> None:
    text = " ".join(words)
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if ch != " " else ch for ch in text.upper())
    assert normalize_text(fullwidth) == normalize_text(text.upper()) == text


def test_homoglyph_table_maps_to_ascii_letters() -> None:
    for src, dst in HOMOGLYPHS.items():
        assert not src.isascii(), src
        assert dst.isascii() and dst.isalpha() and len(dst) == 1, (src, dst)
