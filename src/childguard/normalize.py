"""Text normalisation for the cheap signals (embedders, probes, keyword features).

Why: people who evade filters rarely invent new words; they disguise known ones. Full-width or
styled letters, zero-width joiners between letters, Cyrillic or Greek look-alikes inside Latin
words, leetspeak ("h3ll0") and spaced-out letters ("s e c r e t") all leave the meaning intact
for a human reader but move an embedding far away from the plain word. `normalize_text` undoes
the common disguises so the embedders see the plain form.

It is deliberately lossy and only for signals: the judge sees both the original and this
normalised form (see `Policy.render(..., normalized=...)`), because a normaliser that guesses
wrong must never hide the original text from the model that decides.

Rules, in order (one pass; the pass is repeated until the output no longer changes, which takes
at most a few passes, so the function is idempotent):

1. Unicode NFKC (full-width, ligatures, styled mathematical letters -> plain letters).
2. Zero-width/format characters (category Cf) and control characters removed; tabs and line
   breaks become spaces.
3. Homoglyphs: Cyrillic and Greek letters that look like Latin ones are mapped to Latin in words
   that mix scripts, and in all words when the text is mostly Latin. A mostly Cyrillic or Greek
   text keeps its own script (Russian stays Russian).
4. Casefold.
5. Leetspeak: inside a word with a leet character *between* two letters ("h3ll0", "n00b",
   "wh@t"), every leet character of that word is mapped. Numbers, times and versions ("2024",
   "5pm", "mp3", "covid19") have no such interior digit and stay unchanged.
6. Spaced-out letters: three or more single letters separated by spaces, dots, dashes,
   underscores or asterisks ("s e c r e t", "s.e.c.r.e.t") are joined into one word. Symbols
   and emoji standing between two letters ("m🔹e🔹e🔹t", "lo❤️ve") count as separators first.
7. Whitespace collapsed to single spaces, trimmed.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["HOMOGLYPHS", "LEET", "normalize_text"]

#: Cyrillic and Greek look-alikes of Latin letters (upper and lower case)
HOMOGLYPHS: dict[str, str] = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m",
    "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "ү": "y", "һ": "h", "ӏ": "l", "ь": "b",
    # Cyrillic upper case
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "І": "I", "Ї": "I", "Ј": "J", "К": "K", "М": "M",
    "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "Ԛ": "Q",
    "Ԝ": "W", "Ү": "Y", "Һ": "H", "Ӏ": "I",
    # Greek lower case
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
    # Greek upper case
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C",
}

#: leetspeak characters and the letter they usually stand for
LEET: dict[str, str] = {
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
    "@": "a", "$": "s", "!": "i",
}

_HOMOGLYPH_TABLE = str.maketrans(HOMOGLYPHS)
_LEET_TABLE = str.maketrans(LEET)
_LEET_CLASS = re.escape("".join(LEET))
#: a letter, one or more leet characters, a letter: the mark of a disguised word
_LEET_INTERIOR = re.compile(rf"[^\W\d_][{_LEET_CLASS}]+[^\W\d_]")
#: 3+ single letters/digits separated by spaces or light punctuation, standing alone
_SPACED = re.compile(r"(?<![^\W_])[^\W_](?:[ .\-_*·]+[^\W_]){2,}(?![^\W_])")
_SPACED_SEP = re.compile(r"[ .\-_*·]+")
_WS = re.compile(r"\s+")
_MAX_PASSES = 4


def normalize_text(text: str) -> str:
    """Undo common disguises so signals see the plain word. Idempotent; see the module doc."""
    out = text
    for _ in range(_MAX_PASSES):
        nxt = _one_pass(out)
        if nxt == out:
            return nxt
        out = nxt
    return out


def _one_pass(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _strip_invisible(text)
    text = _map_homoglyphs(text)
    text = unicodedata.normalize("NFKC", text.casefold())
    text = _strip_invisible(text)
    text = _split_symbols(text)
    text = _join_spaced(text)
    text = " ".join(_unleet(tok) for tok in text.split(" "))
    return _WS.sub(" ", text).strip()


def _strip_invisible(text: str) -> str:
    chars: list[str] = []
    for ch in text:
        if ch in "\t\n\r\v\f\x1c\x1d\x1e\x1f\x85\u2028\u2029":
            chars.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cf", "Cc", "Cs", "Co", "Cn"):
            continue
        chars.append(ch)
    return "".join(chars)


def _is_symbol(ch: str) -> bool:
    """Emoji and other symbols (and the variation selectors that style them)."""
    return unicodedata.category(ch) in ("So", "Sk") or ch in "\ufe0e\ufe0f"


def _split_symbols(text: str) -> str:
    """A run of symbols between two letters becomes a space, so letters separated by emoji
    are spaced-out letters (joined next) and "hi👋there" reads as two words."""
    if not any(_is_symbol(ch) for ch in text):
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if not _is_symbol(text[i]):
            out.append(text[i])
            i += 1
            continue
        j = i
        while j < len(text) and _is_symbol(text[j]):
            j += 1
        between = i > 0 and text[i - 1].isalpha() and j < len(text) and text[j].isalpha()
        out.append(" " if between else text[i:j])
        i = j
    return "".join(out)


def _is_latin(ch: str) -> bool:
    return ch.isalpha() and ch.isascii()


def _map_homoglyphs(text: str) -> str:
    letters = [ch for ch in text if ch.isalpha()]
    latin = sum(1 for ch in letters if _is_latin(ch))
    mostly_latin = latin * 2 > len(letters)
    tokens = text.split(" ")
    out: list[str] = []
    for tok in tokens:
        has_confusable = any(ch in HOMOGLYPHS for ch in tok)
        if has_confusable and (mostly_latin or any(_is_latin(ch) for ch in tok)):
            tok = tok.translate(_HOMOGLYPH_TABLE)
        out.append(tok)
    return " ".join(out)


def _unleet(token: str) -> str:
    if _LEET_INTERIOR.search(token):
        return token.translate(_LEET_TABLE)
    return token


def _join_spaced(text: str) -> str:
    def join(match: re.Match[str]) -> str:
        run = match.group(0)
        parts = _SPACED_SEP.split(run)
        if sum(1 for p in parts if p.isalpha()) < 2:
            return run  # "1 2 3" or "2024-01-05" style runs are numbers, not a hidden word
        return "".join(parts)

    return _SPACED.sub(join, text)
