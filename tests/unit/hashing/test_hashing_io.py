"""Hash-list import/export: formats, bad lines with line numbers, duplicates merged."""

from __future__ import annotations

import io

from childguard.hashing.io import parse_hash_list, write_hash_list

PDQ = "f8f8f0cee0f4a84f06370a22038f67f0b36e2ed596621e1d33e6339c4e9c9b22"
MD5 = "02abfa3bf18ae21ed932bfcdb15a1fa9"


def test_text_list_guesses_types_and_reports_bad_lines() -> None:
    text = f"# comment\n{PDQ}\n\n{MD5.upper()},100\nnot-a-hash\n{PDQ[:-1]}\n"
    res = parse_hash_list(io.StringIO(text), "text")
    assert [(e.signal_type, e.value) for e in res.entries] == [("pdq", PDQ), ("md5", MD5)]
    assert [e.line for e in res.errors] == [5, 6]
    assert "63-character" in res.errors[1].reason


def test_text_list_with_explicit_type() -> None:
    sha = "ab" * 32
    res = parse_hash_list(io.StringIO(sha + "\n"), "text", signal_type="sha256")
    assert res.entries[0].signal_type == "sha256" and not res.errors


def test_ncmec_md5_list() -> None:
    res = parse_hash_list(io.StringIO(f"{MD5}\n{MD5.upper()}\n{PDQ}\n"), "ncmec")
    assert [e.value for e in res.entries] == [MD5, MD5]
    assert [e.line for e in res.errors] == [3]  # a 64-digit value is not an MD5


def test_hma_threatexchange_csv_with_metadata() -> None:
    csv_text = (
        "signal_type,signal_value,source,tags\n"
        f"pdq,{PDQ},tx,a b\n"
        f"HASH_MD5,{MD5},ncmec,\n"
        "video_tmk,abcd,tx,\n"
        f"md5,{MD5[:-2]},x,\n"
    )
    res = parse_hash_list(io.StringIO(csv_text), "csv")
    assert [(e.signal_type, e.value, e.metadata) for e in res.entries] == [
        ("pdq", PDQ, {"source": "tx", "tags": "a b"}),
        ("md5", MD5, {"source": "ncmec"}),
    ]
    assert [e.line for e in res.errors] == [4, 5]
    assert "unknown signal type" in res.errors[0].reason


def test_csv_without_hash_column_is_one_error() -> None:
    res = parse_hash_list(io.StringIO("a,b\n1,2\n"), "csv")
    assert res.entries == [] and res.errors[0].line == 1


def test_export_round_trip() -> None:
    rows = [("pdq", PDQ, {"source": "tx"}, 1), ("md5", MD5, {}, 2)]
    out = io.StringIO()
    assert write_hash_list(out, rows, "csv") == 2
    back = parse_hash_list(io.StringIO(out.getvalue()), "csv")
    assert [(e.signal_type, e.value) for e in back.entries] == [("pdq", PDQ), ("md5", MD5)]
    assert back.entries[0].metadata["source"] == "tx"
    text = io.StringIO()
    assert write_hash_list(text, rows, "text", signal_type="md5") == 1
    assert text.getvalue() == MD5 + "\n"
