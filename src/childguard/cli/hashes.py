"""`childguard hashes ...`: compute hashes, manage banks, import/export lists, match files.

Every command reads settings once (`get_settings`) and opens the store at `settings.db_url`
(tables are created if missing). Output is human-readable by default and JSON with `--json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from childguard.cli.main import get_settings
from childguard.errors import InvalidContent, UserError

app = typer.Typer(help="Hash banks and matching (PDQ, MD5, SHA-256).", no_args_is_help=True)
bank_app = typer.Typer(help="Create, list, enable and disable hash banks.", no_args_is_help=True)
app.add_typer(bank_app, name="bank")


def _service(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from childguard.hashing.service import HashService
    from childguard.store.db import make_engine

    settings = get_settings(ctx)
    return HashService.from_settings(settings, make_engine(settings.db_url))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc


def _echo_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@app.command("compute")
def compute(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="image files"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per file, as a list"),
    dihedral: bool = typer.Option(False, "--dihedral", help="also the 8 rotation/flip PDQs"),
) -> None:
    """PDQ (with quality), MD5 and SHA-256 of each file."""
    from childguard.hashing.hashers import hash_image_bytes

    settings = get_settings(ctx)
    rows: list[dict[str, object]] = []
    failed = 0
    for f in files:
        try:
            h = hash_image_bytes(_read(f), settings.limits, dihedral=dihedral)
        except InvalidContent as exc:
            failed += 1
            rows.append({"file": str(f), "error": str(exc)})
            continue
        row: dict[str, object] = {
            "file": str(f), "pdq": h.pdq, "pdq_quality": h.pdq_quality, "md5": h.md5,
            "sha256": h.sha256,
        }
        if dihedral:
            row["pdq_dihedral"] = list(h.pdq_dihedral)
        rows.append(row)
    if json_out:
        _echo_json(rows)
    else:
        for r in rows:
            if "error" in r:
                typer.echo(f"{r['file']}\terror: {r['error']}", err=True)
            else:
                typer.echo(f"{r['pdq']},{r['pdq_quality']}\t{r['md5']}\t{r['sha256']}\t{r['file']}")
    if failed:
        raise typer.Exit(2)


# -- banks ----------------------------------------------------------------------------------------


@bank_app.command("create")
def bank_create(
    ctx: typer.Context,
    name: str,
    category: str | None = typer.Option(None, help="policy category code, e.g. sexual_minors"),
    severity: str | None = typer.Option(None, help="low | medium | high | critical"),
    negative: bool = typer.Option(False, "--negative", help="allowlist that suppresses matches"),
    source: str = typer.Option("local", help="where the list comes from (e.g. ncmec, tx:123)"),
    radius: int | None = typer.Option(None, help="PDQ match radius in bits (default: settings)"),
    description: str = typer.Option("", help="free text"),
    added_by: str = typer.Option("cli", "--by", help="who creates the bank"),
) -> None:
    """Create a bank (no change if it exists)."""
    from childguard.schema import Severity

    sev = None
    if severity is not None:
        try:
            sev = Severity(severity.lower())
        except ValueError as exc:
            raise UserError(
                f"severity {severity!r} is not allowed; use one of "
                f"{', '.join(s.value for s in Severity)}"
            ) from exc
    if category is not None:
        _check_category(ctx, category)
    svc = _service(ctx)
    existed = name in {b.name for b in svc.banks()}
    svc.ensure_bank(
        name, category=category, severity=sev, negative=negative, source=source,
        added_by=added_by, radius=radius, description=description,
    )
    typer.echo(f"bank {name} {'exists' if existed else 'created'}")


def _check_category(ctx: typer.Context, category: str) -> None:
    from childguard.errors import ChildguardError
    from childguard.policy import load_policy

    settings = get_settings(ctx)
    try:
        codes = load_policy(settings.policies_dir / settings.policy).spec.codes
    except ChildguardError:  # no readable policy here: do not block bank management
        return
    if category not in codes:
        raise UserError(f"category {category!r} is not in policy {settings.policy}: {codes}")


@bank_app.command("list")
def bank_list(
    ctx: typer.Context, json_out: bool = typer.Option(False, "--json")
) -> None:
    """List banks with their settings and entry counts."""
    stats = _service(ctx).repo.stats()
    if json_out:
        _echo_json(stats)
        return
    for b in stats:
        kind = "negative" if b["negative"] else "positive"
        state = "enabled" if b["enabled"] else "disabled"
        typer.echo(
            f"{b['name']}\t{kind}\t{state}\tcategory={b['category']}\tseverity={b['severity']}"
            f"\tentries={b['live_total']}\tremoved={b['removed']}"
            f"\tquarantined={b['quarantined']}\tsource={b['source']}"
        )


@bank_app.command("enable")
def bank_enable(ctx: typer.Context, name: str) -> None:
    """Enable a bank (its matches count again)."""
    _service(ctx).set_enabled(name, True)
    typer.echo(f"bank {name} enabled")


@bank_app.command("disable")
def bank_disable(ctx: typer.Context, name: str) -> None:
    """Disable a bank (kept, but its entries no longer match)."""
    _service(ctx).set_enabled(name, False)
    typer.echo(f"bank {name} disabled")


# -- entries --------------------------------------------------------------------------------------


@app.command("import")
def import_(
    ctx: typer.Context,
    bank: str,
    file: Path = typer.Argument(..., help="hash list ('-' for stdin)"),
    fmt: str = typer.Option("auto", "--format", help="auto | text | csv | ncmec"),
    signal_type: str | None = typer.Option(
        None, "--signal-type", help="type of rows that do not name one (pdq, md5, sha256)"
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="import the good lines even if some are bad"
    ),
    added_by: str = typer.Option("cli", "--by"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Import a hash list into a bank. Bad lines are reported; nothing is imported unless
    --skip-invalid is given. Duplicates are merged."""
    from childguard.hashing.io import FORMATS, iter_errors, parse_hash_list

    if fmt not in FORMATS:
        raise UserError(f"format {fmt!r} is not allowed; use one of {', '.join(FORMATS)}")
    try:
        if str(file) == "-":
            res = parse_hash_list(sys.stdin, fmt, signal_type=signal_type)  # type: ignore[arg-type]
        else:
            with open(file, encoding="utf-8-sig", newline="") as fh:
                res = parse_hash_list(fh, fmt, signal_type=signal_type, path=file)  # type: ignore[arg-type]
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{file} is not UTF-8 text (byte {exc.start}); hash lists are text"
        ) from exc
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    for line in iter_errors(res.errors):
        typer.echo(f"{file}: {line}", err=True)
    if res.errors and not skip_invalid:
        raise UserError(
            f"{len(res.errors)} bad line(s) in {file}; nothing imported "
            "(fix them or pass --skip-invalid to import the other lines)"
        )
    svc = _service(ctx)
    result = svc.add_hashes(bank, res.entries, added_by=added_by)
    summary = {
        "bank": bank, "read": len(res.entries), "added": len(result.added),
        "merged_duplicates": len(res.entries) - len(result.added), "bad_lines": len(res.errors),
    }
    if json_out:
        _echo_json(summary)
    else:
        typer.echo(
            f"imported into {bank}: {summary['added']} new, {summary['merged_duplicates']} "
            f"duplicates merged, {summary['bad_lines']} bad lines skipped"
        )


@app.command("export")
def export(
    ctx: typer.Context,
    bank: str,
    output: Path | None = typer.Option(None, "--output", "-o", help="file (default: stdout)"),
    fmt: str = typer.Option("csv", "--format", help="csv | text | ncmec"),
    signal_type: str | None = typer.Option(None, "--signal-type", help="only this type"),
) -> None:
    """Export a bank's live entries."""
    from childguard.hashing.io import write_hash_list

    if fmt not in ("csv", "text", "ncmec"):
        raise UserError(f"format {fmt!r} is not allowed; use csv, text or ncmec")
    from childguard.hashing.store import VPDQ

    svc = _service(ctx)
    info = svc.bank(bank)
    # video entries are frame lists, not one hash: `hashes export-videos` writes them
    rows = (r for r in svc.repo.export_entries(info.id) if r[0] != VPDQ)
    if output is None:
        n = write_hash_list(sys.stdout, rows, fmt, signal_type=signal_type)  # type: ignore[arg-type]
    else:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            n = write_hash_list(fh, rows, fmt, signal_type=signal_type)  # type: ignore[arg-type]
        typer.echo(f"exported {n} entries of {bank} to {output}", err=True)


@app.command("add")
def add(
    ctx: typer.Context,
    bank: str,
    files: list[Path] = typer.Argument(None, help="image files to hash into the bank"),
    hashes: list[str] = typer.Option(
        [], "--hash", help="a hash instead of a file, as TYPE:VALUE (e.g. md5:0123...)"
    ),
    note: str | None = typer.Option(None, help="metadata 'note' on each entry"),
    added_by: str = typer.Option("cli", "--by"),
) -> None:
    """Add images (their PDQ, MD5, SHA-256) or explicit hashes to a bank."""
    from childguard.hashing.store import NewEntry

    svc = _service(ctx)
    meta = {"note": note} if note else {}
    total = 0
    for f in files or []:
        ids = svc.add_bytes(bank, _read(f), added_by=added_by, metadata={**meta, "file": f.name})
        total += len(ids)
        typer.echo(f"{f}: entries {', '.join(ids)}")
    if hashes:
        entries = [NewEntry(*_split_hash(h), meta) for h in hashes]
        res = svc.add_hashes(bank, entries, added_by=added_by)
        total += len(res.ids)
        typer.echo(f"hashes: {len(res.added)} added, {len(res.merged)} already present")
    if not files and not hashes:
        raise UserError("nothing to add: give image files or --hash TYPE:VALUE")


def _split_hash(text: str) -> tuple[str, str]:
    from childguard.hashing.hashers import canonical_signal_type, guess_signal_type

    if ":" in text:
        st, value = text.split(":", 1)
        try:
            return canonical_signal_type(st), value
        except ValueError as exc:
            raise UserError(str(exc)) from exc
    try:
        return guess_signal_type(text), text
    except ValueError as exc:
        raise UserError(str(exc)) from exc


@app.command("remove")
def remove(
    ctx: typer.Context,
    bank: str,
    files: list[Path] = typer.Argument(None, help="image files whose entries to remove"),
    hashes: list[str] = typer.Option([], "--hash", help="TYPE:VALUE to remove"),
    removed_by: str = typer.Option("cli", "--by"),
) -> None:
    """Remove entries (tombstoned: kept for audit, no longer matched)."""
    svc = _service(ctx)
    n = 0
    for f in files or []:
        n += svc.remove_bytes(bank, _read(f), removed_by=removed_by)
    if hashes:
        try:
            n += svc.remove_hashes(bank, [_split_hash(h) for h in hashes], removed_by=removed_by)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
    if not files and not hashes:
        raise UserError("nothing to remove: give image files or --hash TYPE:VALUE")
    typer.echo(f"removed {n} entries from {bank}")


@app.command("match")
def match(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="image files"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Look files up in every enabled bank. Exit 1 if any file has a decisive match."""
    svc = _service(ctx)
    out: list[dict[str, Any]] = []
    decisive = False
    for f in files:
        try:
            check = svc.check(_read(f))
        except InvalidContent as exc:
            out.append({"file": str(f), "error": str(exc)})
            continue
        decisive = decisive or check.decisive is not None
        meta = svc.entry_metadata([m.entry_id for m in check.matches])
        row = {"file": str(f), **check.model_dump(mode="json")}
        row["entry_metadata"] = meta
        out.append(row)
    _report_matches(out, decisive, json_out)


def _report_matches(out: list[dict[str, Any]], decisive: bool, json_out: bool) -> None:
    """Print per-file checks (JSON or a line each); exit 1 when any match was decisive."""
    if json_out:
        _echo_json(out)
    else:
        for r in out:
            if "error" in r:
                typer.echo(f"{r['file']}\terror: {r['error']}")
                continue
            d = r["decisive"]
            verdict = f"MATCH {d['bank']} ({d['signal_type']} d={d['distance']})" if d else (
                "suppressed" if r["suppressed"] else "no match")
            typer.echo(f"{r['file']}\t{verdict}\tmatches={len(r['matches'])}"
                       + (f"\tnote: {r['note']}" if r["note"] else ""))
    if decisive:
        raise typer.Exit(1)


@app.command("stats")
def stats(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """Bank sizes, quarantined entries, index size."""
    svc = _service(ctx)
    s = svc.stats()
    s["quarantined_entries"] = svc.repo.quarantined()
    if json_out:
        _echo_json(s)
        return
    typer.echo(f"entries in memory: {s['entries_in_memory']}; PDQ indexed: {s['pdq_indexed']} "
               f"in segments {s['pdq_segments']} ({s['pdq_index_bytes'] / 2**20:.1f} MiB)")
    for b in s["banks"]:
        typer.echo(f"  {b['name']}: {b['live']} removed={b['removed']} "
                   f"quarantined={b['quarantined']} enabled={b['enabled']}")
    for q in s["quarantined_entries"]:
        typer.echo(f"  QUARANTINED entry {q['entry_id']} in {q['bank']}: {q['reason']}")


@app.command("release")
def release(ctx: typer.Context, entry_id: int) -> None:
    """Lift the flood-guard quarantine of an entry after review."""
    if not _service(ctx).release(entry_id):
        raise UserError(f"entry {entry_id} is not quarantined")
    typer.echo(f"entry {entry_id} released")


def _video_frames(path: Path, *, every_frame: bool, bars: bool) -> Any:
    """Frame hashes of a video file, or of a vPDQ hash file (Meta's text format, .txt)."""
    from childguard.hashing.video import hash_video, parse_vpdq

    if path.suffix.lower() == ".txt":
        return parse_vpdq(_read(path).decode("utf-8", "replace"), where=str(path))
    return hash_video(path, seconds_per_hash=0 if every_frame else 1.0, bars=bars).frames


@app.command("vpdq")
def vpdq_cmd(
    video: Path = typer.Argument(..., help="an mp4, mov or webm file"),
    every_frame: bool = typer.Option(False, "--every-frame",
                                     help="hash every frame (default: one per second, as vPDQ)"),
    no_bars: bool = typer.Option(False, "--no-bars",
                                 help="do not crop letterbox bars (Meta's hashes exactly)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write the hashes here"),
) -> None:
    """Hash a video as vPDQ: one line a frame, `frame,quality,pdq,timestamp` (Meta's format)."""
    from childguard.hashing.video import format_vpdq, hash_video

    got = hash_video(video, seconds_per_hash=0 if every_frame else 1.0, bars=not no_bars)
    text = format_vpdq(got.frames)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"{len(got.frames)} frame hashes of {video.name} ({got.duration_s} s, "
                   f"md5 {got.md5}) written to {output}", err=True)
    else:
        typer.echo(text, nl=False)


@app.command("vpdq-match")
def vpdq_match_cmd(
    query: Path = typer.Argument(..., help="a video, or its vPDQ hash file (.txt)"),
    target: Path = typer.Argument(..., help="a video, or its vPDQ hash file (.txt)"),
    every_frame: bool = typer.Option(False, "--every-frame", help="hash videos every frame"),
    query_pct: float = typer.Option(80.0, "--query-pct", min=0, max=100),
    target_pct: float = typer.Option(80.0, "--target-pct", min=0, max=100),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Match two videos as vPDQ does (frames of quality >= 50 within distance 31; both shares
    at or over the thresholds); names the matching segments. Exit 0 on a match, 1 otherwise."""
    from childguard.hashing.video import match_videos

    m = match_videos(_video_frames(query, every_frame=every_frame, bars=True),
                     _video_frames(target, every_frame=every_frame, bars=True))
    out = {"match": m.is_match(query_pct, target_pct), "query_match_pct": m.query_match_pct,
           "target_match_pct": m.target_match_pct,
           "segments": [vars(s) for s in m.segments]}
    if json_out:
        _echo_json(out)
    else:
        typer.echo(f"{'MATCH' if out['match'] else 'no match'}: query {m.query_match_pct}% / "
                   f"target {m.target_match_pct}% of frames")
        for s in m.segments:
            typer.echo(f"  query {s.query_start:.1f}-{s.query_end:.1f} s ~ target "
                       f"{s.target_start:.1f}-{s.target_end:.1f} s")
    if not out["match"]:
        raise typer.Exit(1)


# -- video banks --------------------------------------------------------------------------


def _is_hash_file(path: Path) -> bool:
    return path.suffix.lower() in (".txt", ".vpdq")


@app.command("add-video")
def add_video(
    ctx: typer.Context,
    bank: str,
    files: list[Path] = typer.Argument(..., help="videos (mp4, mov, webm), or vPDQ hash files "
                                       "in Meta's text format (.txt / .vpdq)"),
    note: str | None = typer.Option(None, help="metadata 'note' on each entry"),
    added_by: str = typer.Option("cli", "--by"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Add videos to a bank: a video file contributes its vPDQ frame hashes (sampled as the
    service samples) and its file MD5 / SHA-256; a hash file its frames. Importing the same
    frames twice merges."""
    from childguard.hashing.video import parse_vpdq

    svc = _service(ctx)
    out = []
    for f in files:
        meta = {"file": f.name, **({"note": note} if note else {})}
        if _is_hash_file(f):
            frames = parse_vpdq(_read(f).decode("utf-8", "replace"), where=str(f))
            ids = svc.add_video(bank, frames, added_by=added_by, metadata=meta)
        else:
            ids = svc.add_video(bank, svc.hash_video_bytes(f), added_by=added_by,
                                metadata=meta)
        out.append({"file": str(f), "entries": ids})
    if json_out:
        _echo_json(out)
    else:
        for r in out:
            typer.echo(f"{r['file']}: entries {', '.join(r['entries'])}")


@app.command("export-videos")
def export_videos(
    ctx: typer.Context,
    bank: str,
    directory: Path = typer.Argument(..., help="written: <entry id>.txt per video (Meta's "
                                     "vPDQ text format) and videos.csv"),
) -> None:
    """Export a bank's live video entries as vPDQ hash files; their file MD5s are ordinary
    md5 entries (`hashes export BANK --signal-type md5`)."""
    import csv

    from childguard.hashing.video import FrameHash, format_vpdq

    svc = _service(ctx)
    info = svc.bank(bank)
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(directory / "videos.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["entry_id", "vpdq_id", "frames", "file", "note"])
        for eid, value, meta, frames in svc.repo.export_videos(info.id):
            (directory / f"{eid}.txt").write_text(
                format_vpdq(FrameHash(*f) for f in frames), encoding="utf-8")
            w.writerow([eid, value, len(frames), meta.get("file", ""), meta.get("note", "")])
            n += 1
    typer.echo(f"exported {n} videos of {bank} to {directory}", err=True)


@app.command("match-video")
def match_video(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="videos (mp4, mov, webm)"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Look videos up in every enabled bank (file hashes exactly, frames by vPDQ's rule).
    Exit 1 if any has a decisive match."""
    svc = _service(ctx)
    out: list[dict[str, Any]] = []
    decisive = False
    for f in files:
        try:
            got = svc.hash_video_bytes(f)
        except (InvalidContent, UserError) as exc:
            out.append({"file": str(f), "error": str(exc)})
            continue
        check = svc.check_video(got)
        decisive = decisive or check.decisive is not None
        out.append({"file": str(f), **check.model_dump(mode="json")})
    _report_matches(out, decisive, json_out)
