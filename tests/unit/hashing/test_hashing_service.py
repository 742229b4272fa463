"""HashService on SQLite: bank matches, negative banks, quality, flood guard, restart, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hashing_support import KODAK, PDQ_DIR, flat_png, make_service, near_copy

from childguard.cli.main import main
from childguard.errors import InvalidContent, NotFound, UserError
from childguard.hashing.service import HashService
from childguard.schema import Severity


def test_benign_image_matches_its_edited_copy_and_negative_bank_suppresses(
    service: HashService, images_dir: Path
) -> None:
    original = (KODAK / "kodim23.png").read_bytes()
    copy = near_copy(original, crop=0.01, scale=0.6, quality=50)
    service.ensure_bank("test-bank", category="sexual_minors", severity=Severity.CRITICAL)
    ids = service.add_bytes("test-bank", original, added_by="test", metadata={"case": "t1"})
    assert len(ids) == 3  # md5, sha256, pdq

    check = service.check(copy)
    assert check.pdq_used and check.decisive is not None
    assert check.decisive.bank == "test-bank" and check.decisive.signal_type == "pdq"
    assert 0 < check.decisive.distance <= 31
    assert check.decisive.category == "sexual_minors"
    assert check.decisive.severity is Severity.CRITICAL
    assert service.entry_metadata([check.decisive.entry_id])[check.decisive.entry_id] == {
        "case": "t1"
    }
    # an unrelated photo does not match
    assert service.check((KODAK / "kodim01.png").read_bytes()).matches == ()

    service.ensure_bank("allow", negative=True)
    service.add_bytes("allow", original, added_by="test")
    check = service.check(copy)
    assert check.decisive is None
    assert [m.bank for m in check.suppressed] == ["test-bank"]
    assert any(m.negative and m.bank == "allow" for m in check.matches)
    # exact (md5) positive hits are not suppressed by a PDQ-only negative hit ...
    assert service.check(original).decisive is None  # ... but here the negative is exact too


def test_exact_match_survives_pdq_only_negative(service: HashService, images_dir: Path) -> None:
    original = (KODAK / "kodim23.png").read_bytes()
    service.ensure_bank("known", severity=Severity.HIGH)
    service.ensure_bank("allow", negative=True)
    service.add_bytes("known", original, added_by="t")
    pdq = service.check(original).hashes["pdq"]
    service.add_hashes("allow", [], added_by="t")
    from childguard.hashing.store import NewEntry

    service.add_hashes("allow", [NewEntry("pdq", pdq, {})], added_by="t")
    check = service.check(original)
    assert check.decisive is not None and check.decisive.signal_type in ("md5", "sha256")
    assert [m.signal_type for m in check.suppressed] == ["pdq"]


def test_low_quality_pdq_is_not_used(service: HashService) -> None:
    flat = flat_png()
    service.ensure_bank("known")
    service.add_bytes("known", flat, added_by="t")
    other_flat = flat_png((10, 200, 30))
    check = service.check(other_flat)
    assert check.pdq_quality is not None and check.pdq_quality < 50
    assert not check.pdq_used and "below the minimum" in check.note
    assert check.matches == ()  # featureless images would all match each other on PDQ
    assert service.check(flat).decisive is not None  # exact hashes still work


def test_dihedral_setting(tmp_path: Path, images_dir: Path) -> None:
    files = sorted((PDQ_DIR / "reg-test-input" / "dih").glob("*.jpg"))
    plain = make_service(tmp_path / "a")
    dih = make_service(tmp_path / "b", dihedral=True)
    for svc in (plain, dih):
        svc.ensure_bank("known")
        svc.add_bytes("known", files[0].read_bytes(), added_by="t")
    assert all(dih.check(f.read_bytes()).decisive is not None for f in files)
    assert sum(plain.check(f.read_bytes()).decisive is not None for f in files) <= 2


def test_flood_guard_quarantines_and_reports(tmp_path: Path, images_dir: Path) -> None:
    svc = make_service(tmp_path, flood_window_s=60, flood_max_hits=3)
    now = [1000.0]
    svc._clock = lambda: now[0]
    img = (KODAK / "kodim03.png").read_bytes()
    svc.ensure_bank("known", severity=Severity.HIGH)
    svc.add_bytes("known", img, added_by="t")
    for _ in range(3):
        assert svc.check(img).decisive is not None
        now[0] += 1
    check = svc.check(img)  # the 4th hit in 60 s on each entry
    assert check.decisive is None and check.matches
    assert all(m.quarantined for m in check.matches)
    assert "flood guard" in check.note
    assert len(svc.repo.quarantined()) == 3
    # quarantine is persisted: a fresh service (restart) still holds the entries back
    restarted = HashService.from_settings(
        svc_settings(tmp_path, flood_window_s=60, flood_max_hits=3), svc.repo.engine
    )
    assert restarted.check(img).decisive is None
    entry = int(check.matches[0].entry_id)
    assert restarted.release(entry)
    assert any(not m.quarantined for m in restarted.check(img).matches)


def svc_settings(tmp_path: Path, **hashing: object):  # type: ignore[no-untyped-def]
    from childguard.settings import Settings

    home = tmp_path / "home"
    return Settings.load(
        home=home, database_url=f"sqlite:///{home / 'childguard.db'}", hashing=hashing
    )


def test_persistence_remove_disable_and_restart(tmp_path: Path, images_dir: Path) -> None:
    svc = make_service(tmp_path)
    a, b = (KODAK / "kodim05.png").read_bytes(), (KODAK / "kodim06.png").read_bytes()
    svc.ensure_bank("known", category="grooming", severity=Severity.HIGH, source="tx:1")
    svc.add_bytes("known", a, added_by="t")
    svc.add_bytes("known", b, added_by="t")
    assert svc.add_bytes("known", a, added_by="t") == svc.add_bytes("known", a, added_by="t")
    assert svc.remove_bytes("known", b, removed_by="t") == 3
    assert svc.check(b).matches == ()

    again = make_service(tmp_path)  # same home: same SQLite file
    assert again.bank("known").source == "tx:1"
    assert again.check(a).decisive is not None
    assert again.check(b).matches == ()
    stats = {s["name"]: s for s in again.repo.stats()}["known"]
    assert stats["live_total"] == 3 and stats["removed"] == 3
    again.set_enabled("known", False)
    assert again.check(a).matches == ()
    assert make_service(tmp_path).check(a).matches == ()


def test_errors(service: HashService) -> None:
    with pytest.raises(NotFound, match="no hash bank named"):
        service.add_bytes("missing", flat_png(), added_by="t")
    with pytest.raises(UserError, match="bank name"):
        service.ensure_bank("bad name!")
    with pytest.raises(InvalidContent):
        service.check(b"\x89PNG\r\n\x1a\n broken")


def test_cli_import_all_or_nothing_and_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    images_dir: Path,
) -> None:
    monkeypatch.setenv("CHILDGUARD_HOME", str(tmp_path / "cli-home"))
    monkeypatch.delenv("CHILDGUARD_DATABASE_URL", raising=False)
    monkeypatch.delenv("CHILDGUARD_CONFIG", raising=False)
    img = KODAK / "kodim07.png"
    assert main(["hashes", "compute", str(img), "--json"]) == 0
    computed = json.loads(capsys.readouterr().out)[0]
    assert computed["pdq_quality"] >= 50 and len(computed["md5"]) == 32
    assert main(["hashes", "bank", "create", "known", "--category", "sexual_minors",
                 "--severity", "critical"]) == 0
    lst = tmp_path / "list.csv"
    lst.write_text(
        "signal_type,signal_value,source\n"
        f"pdq,{computed['pdq']},test\n"
        "md5,xyz,test\n"
        f"md5,{computed['md5']},test\n"
        f"md5,{computed['md5']},dup\n"
    )
    capsys.readouterr()
    assert main(["hashes", "import", "known", str(lst)]) == 2
    err = capsys.readouterr().err
    assert "line 3:" in err and "nothing imported" in err
    assert main(["hashes", "match", str(img)]) == 0  # nothing was imported
    capsys.readouterr()
    assert main(["hashes", "import", "known", str(lst), "--skip-invalid", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 2 and summary["bad_lines"] == 1
    assert main(["hashes", "match", str(img), "--json"]) == 1  # decisive match -> exit 1
    out = json.loads(capsys.readouterr().out)
    assert out[0]["decisive"]["bank"] == "known"
    assert main(["hashes", "export", "known", "--format", "text", "--signal-type", "md5"]) == 0
    assert capsys.readouterr().out.split() == [computed["md5"]]
    assert main(["hashes", "bank", "disable", "known"]) == 0
    assert main(["hashes", "match", str(img)]) == 0
    assert main(["hashes", "stats", "--json"]) == 0


def test_refresh_sees_other_writers_in_any_id_order(tmp_path: Path, images_dir: Path) -> None:
    a = make_service(tmp_path)
    b = make_service(tmp_path)  # another replica / the CLI, same store
    imgs = [(KODAK / f"kodim{i:02d}.png").read_bytes() for i in (9, 10, 11)]
    a.ensure_bank("known")
    b.refresh()
    b.add_bytes("known", imgs[0], added_by="b")  # ids 1-3, unseen by a
    a.add_bytes("known", imgs[1], added_by="a")  # ids 4-6: a now holds ids above b's
    assert a.check(imgs[0]).matches == ()
    a.refresh()  # loads ids 1-3 out of order
    assert a.check(imgs[0]).decisive is not None
    assert a.check(imgs[1]).decisive is not None
    b.refresh()
    assert b.remove_bytes("known", imgs[0], removed_by="b") == 3
    a.refresh()
    assert a.check(imgs[0]).matches == ()
    assert a.check(imgs[2]).matches == ()
