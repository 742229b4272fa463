"""Video banks: a bank video (vPDQ frames + file MD5/SHA-256) matches its edits through the
hash service, survives a restart (SQLite and PostgreSQL), is tombstoned by removal, is
suppressed by a negative bank, merges when imported twice, and round-trips through Meta's
text format with the CLI. The sample clips are benign (Meta's chair / pattern / doorknob);
a "known" video here is a test bank entry, nothing more."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from childguard.hashing.service import HashService
from childguard.hashing.store import VPDQ
from childguard.hashing.video import VideoHashes, hash_video, parse_vpdq
from childguard.schema import Severity
from childguard.settings import Settings
from childguard.store.db import make_engine
from childguard.store.migrate import migrate
from sample_media import sample_video

pytestmark = pytest.mark.integration



def _video(name: str) -> Path:
    return sample_video(name)


@pytest.fixture(scope="module")
def clips() -> dict[str, VideoHashes]:
    """The clips at the service's default sampling (one hash a second)."""
    return {n: hash_video(_video(n)) for n in (
        "chair-orig-22-sd-bar", "chair-20-sd-bar", "chair-22-sd-grey-bar", "pattern-hd-no-bar",
        "doorknob-hd-no-bar")}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine")  # conftest.py: a private schema
        return
    eng = make_engine(f"sqlite:///{tmp_path / 'banks.db'}")
    yield eng
    eng.dispose()


def _service(engine: Engine, tmp_path: Path) -> HashService:
    migrate(engine)
    settings = Settings.load(home=tmp_path / "home", database_url="sqlite://")
    return HashService.from_settings(settings, engine)


def test_a_bank_video_matches_its_edits_and_survives_a_restart(
        engine: Engine, tmp_path: Path, clips: dict[str, VideoHashes]) -> None:
    svc = _service(engine, tmp_path)
    svc.ensure_bank("known-videos", category="sexual_minors", severity=Severity.CRITICAL)
    ids = svc.add_video("known-videos", clips["chair-orig-22-sd-bar"], added_by="test",
                        metadata={"note": "benign test clip"})
    assert len(ids) == 3  # the vPDQ entry, its MD5 and SHA-256

    for query in ("chair-20-sd-bar", "chair-22-sd-grey-bar"):
        check = svc.check_video(clips[query])
        d = check.decisive
        assert d is not None and d.signal_type == VPDQ and d.bank == "known-videos", query
        assert d.entry_id == ids[0] and d.video is not None
        assert d.video.query_match_pct >= 80 and d.video.target_match_pct >= 80
        assert d.video.segments and d.video.segments[0].query_start <= 1.0
    for other in ("pattern-hd-no-bar", "doorknob-hd-no-bar"):
        assert svc.check_video(clips[other]).matches == (), other

    # the very file: its exact hashes match too
    same = svc.check_video(clips["chair-orig-22-sd-bar"])
    assert {m.signal_type for m in same.matches} == {"md5", "sha256", VPDQ}

    # a new process loads the video entries from the store
    again = _service(engine, tmp_path)
    assert again.stats()["videos_indexed"] == 1
    d2 = again.check_video(clips["chair-20-sd-bar"]).decisive
    assert d2 is not None and d2.entry_id == ids[0]

    # tombstoned: no longer matched, here and after a restart
    vpdq_id = svc.repo.export_videos(svc.bank("known-videos").id).__next__()[1]
    assert again.remove_hashes("known-videos", [(VPDQ, vpdq_id)], removed_by="test") == 1
    assert again.check_video(clips["chair-20-sd-bar"]).matches == ()
    assert _service(engine, tmp_path).check_video(clips["chair-20-sd-bar"]).matches == ()


def test_negative_banks_duplicates_and_bad_ids(
        engine: Engine, tmp_path: Path, clips: dict[str, VideoHashes]) -> None:
    svc = _service(engine, tmp_path)
    svc.ensure_bank("known-videos", category="sexual_minors", severity=Severity.CRITICAL)
    svc.ensure_bank("allow-videos", negative=True)
    first = svc.add_video("known-videos", clips["pattern-hd-no-bar"].frames, added_by="test")
    # the same frames again merge into the same entry
    assert svc.add_video("known-videos", clips["pattern-hd-no-bar"].frames,
                         added_by="test")[0] == first[0]
    assert svc.stats()["videos_indexed"] == 1
    hit = svc.check_video(clips["pattern-hd-no-bar"])
    assert hit.decisive is not None and hit.decisive.signal_type == VPDQ
    # a known false positive listed in a negative bank suppresses the positive video hit
    svc.add_video("allow-videos", clips["pattern-hd-no-bar"].frames, added_by="test")
    held = svc.check_video(clips["pattern-hd-no-bar"])
    assert held.decisive is None and len(held.suppressed) == 1
    assert "suppressed by a negative bank" in held.note
    with pytest.raises(ValueError, match="64-hex-digit"):
        svc.remove_hashes("known-videos", [(VPDQ, "abc")], removed_by="test")


def test_the_flood_guard_holds_back_a_video_entry(
        tmp_path: Path, clips: dict[str, VideoHashes]) -> None:
    """A bank video matching more than `flood_max_hits` times within the window is
    quarantined (persisted), reported as such and never decisive, until released."""
    engine = make_engine(f"sqlite:///{tmp_path / 'flood.db'}")
    migrate(engine)
    settings = Settings.load(home=tmp_path / "home", database_url="sqlite://",
                             hashing={"flood_max_hits": 2})
    svc = HashService.from_settings(settings, engine)
    svc.ensure_bank("known-videos", category="sexual_minors", severity=Severity.CRITICAL)
    eid = svc.add_video("known-videos", clips["pattern-hd-no-bar"].frames, added_by="test")[0]
    results = [svc.check_video(clips["pattern-hd-no-bar"]) for _ in range(3)]
    assert [r.decisive is not None for r in results] == [True, True, False]
    assert results[2].matches[0].quarantined and "flood guard" in results[2].note
    assert [q["entry_id"] for q in svc.repo.quarantined()] == [int(eid)]
    assert svc.release(int(eid))
    assert svc.check_video(clips["pattern-hd-no-bar"]).decisive is not None
    engine.dispose()


def test_cli_exports_and_imports_video_banks(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from childguard.cli.main import app

    env = {"CHILDGUARD_HOME": str(tmp_path / "home"),
           "CHILDGUARD_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    run = CliRunner().invoke
    for bank in ("exported", "imported"):
        r = run(app, ["hashes", "bank", "create", bank, "--category", "sexual_minors",
                      "--severity", "critical"], env=env)
        assert r.exit_code == 0, r.output
    r = run(app, ["hashes", "add-video", "exported", str(_video("chair-orig-22-sd-bar")),
                  "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)[0]["entries"]) == 3
    out = tmp_path / "export"
    r = run(app, ["hashes", "export-videos", "exported", str(out)], env=env)
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*.txt"))
    assert len(files) == 1 and len(parse_vpdq(files[0].read_text())) >= 5
    assert "chair-orig-22-sd-bar.mp4" in (out / "videos.csv").read_text()
    # the hash list of an ordinary export leaves video entries out (they are frame lists)
    r = run(app, ["hashes", "export", "exported", "--format", "csv"], env=env)
    assert r.exit_code == 0 and VPDQ not in r.stdout and "md5" in r.stdout
    # Meta's text format in, and an edit of the clip matches the imported entry
    r = run(app, ["hashes", "add-video", "imported", str(files[0])], env=env)
    assert r.exit_code == 0, r.output
    r = run(app, ["hashes", "bank", "disable", "exported"], env=env)
    assert r.exit_code == 0, r.output
    r = run(app, ["hashes", "match-video", str(_video("chair-20-sd-bar")), "--json"], env=env)
    assert r.exit_code == 1, r.output  # 1 = a decisive match
    got = json.loads(r.stdout)[0]
    assert got["decisive"]["bank"] == "imported" and got["decisive"]["signal_type"] == VPDQ
    r = run(app, ["hashes", "match-video", str(_video("doorknob-hd-no-bar"))], env=env)
    assert r.exit_code == 0 and "no match" in r.stdout
