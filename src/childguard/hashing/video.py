"""vPDQ: video hashing and matching as Meta's vPDQ, so our video hashes match hashes others share.

Why this shape: known abuse videos circulate re-encoded, trimmed, cropped, letterboxed and
stamped with logos, and the industry shares them as vPDQ (one PDQ hash per sampled frame, with
its quality and timestamp). So:

- **Hashing** decodes with PyAV, whose wheel bundles FFmpeg (no system FFmpeg), converts each
  sampled frame to RGB24 and hashes it with `pdqhash` (Meta's C++ PDQ) at full resolution, as
  vPDQ's `bufferhasher` does. Default: one frame per second (`seconds_per_hash=1.0`, vPDQ's
  default); 0 hashes every frame, which is how Meta's reference files were made. Checked frame
  by frame against those references (tests/integration/hashing/test_video_vpdq.py: every frame
  of the sample videos within PDQ distance 10; README's table).
- **Letterbox bars** are cropped before hashing (`bars=True`, our addition): PDQ sees the
  picture, not the bars, so a letterboxed copy matches the original. With `bars=False` the
  hashes are Meta's.
- **Pruning** drops a frame whose hash is within `prune_distance` bits of the previous kept
  frame (a static scene is one hash, not sixty), keeping the first frame's number and time.
- **Matching** is vPDQ's rule: only frames of quality >= 50 count; a query matches a target
  when the share of query frames within distance 31 of some target frame, and the share of
  target frames within 31 of some query frame, both reach thresholds (default 80% / 80%).
  `VideoMatch.segments` names the matching stretches by timestamp. Meta's brute matcher counts
  distance < 31; we use <= 31, the radius our image matching uses (one bit apart, documented).

Untrusted input is checked before decoding frames: bytes, container and stream present,
duration, frame size (a "bomb" of huge frames), then frame count while decoding; each failure
is a typed error (413 / 415 / 422) that says what was wrong and what is allowed.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from childguard.errors import ContentTooLarge, InvalidContent, UnsupportedMedia
from childguard.hashing.hashers import MD5, SHA256, exact_hashes, pdq_bits_to_hex

if TYPE_CHECKING:
    from childguard.settings import LimitsSettings

#: containers we accept (PyAV format names as FFmpeg reports them)
ALLOWED_CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
ALLOWED_NAMES = "mp4, mov, webm"


@dataclass(frozen=True)
class VideoLimits:
    """What a video may be. Errors quote these numbers."""

    max_bytes: int = 200 * 1024 * 1024
    max_duration_s: float = 15 * 60.0
    max_frame_pixels: int = 3840 * 2160
    max_hashed_frames: int = 3600


def video_limits(limits: LimitsSettings) -> VideoLimits:
    """`VideoLimits` from the settings' `limits` section (`LimitsSettings`)."""
    return VideoLimits(max_bytes=limits.max_video_bytes,
                       max_duration_s=limits.max_video_duration_s,
                       max_frame_pixels=limits.max_video_frame_pixels,
                       max_hashed_frames=limits.max_video_hashed_frames)


@dataclass(frozen=True)
class FrameHash:
    """One hashed frame: its number in the decoded stream, PDQ quality, hex hash, time (s)."""

    frame: int
    quality: int
    pdq: str
    timestamp: float


@dataclass(frozen=True)
class Keyframe:
    """A frame kept for the image signals: its time, frame number and picture (RGB, at most
    `KEYFRAME_SIDE` pixels a side)."""

    timestamp: float
    frame: int
    image: Any = field(repr=False, compare=False)


#: keyframes are shrunk to this many pixels on their longer side (detectors, CLIP and OCR read
#: smaller inputs; text in a 720p frame stays legible)
KEYFRAME_SIDE = 768


@dataclass(frozen=True)
class VideoHashes:
    """A video's exact hashes, its vPDQ frame hashes and (when asked for) its keyframes."""

    md5: str
    sha256: str
    frames: tuple[FrameHash, ...]
    duration_s: float
    width: int
    height: int
    decoded_frames: int
    keyframes: tuple[Keyframe, ...] = field(default=(), repr=False, compare=False)


def hamming_hex(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _open(data: bytes | Path, limits: VideoLimits) -> Any:
    import av

    size = data.stat().st_size if isinstance(data, Path) else len(data)
    if size == 0:
        raise InvalidContent(f"video is empty (0 bytes); send {ALLOWED_NAMES}")
    if size > limits.max_bytes:
        raise ContentTooLarge(f"video is {size} bytes; at most {limits.max_bytes} bytes are "
                              "allowed")
    src: Any = str(data) if isinstance(data, Path) else io.BytesIO(data)
    try:
        container = av.open(src, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise UnsupportedMedia(f"cannot read a video container ({size} bytes); allowed: "
                               f"{ALLOWED_NAMES} ({type(exc).__name__})") from exc
    if container.format.name not in ALLOWED_CONTAINERS:
        container.close()
        raise UnsupportedMedia(f"video container {container.format.name!r} is not supported; "
                               f"allowed: {ALLOWED_NAMES}")
    if not container.streams.video:
        container.close()
        raise UnsupportedMedia(f"the file has no video stream; send {ALLOWED_NAMES} with one")
    return container


def crop_bars(rgb: np.ndarray, *, dark: float = 24.0) -> np.ndarray:
    """The frame without letterbox / pillarbox bars: the outer rows and columns whose mean
    brightness is under `dark` (of 255). A frame that is nearly all dark is kept whole."""
    luma = rgb.mean(axis=2)
    rows = np.flatnonzero(luma.mean(axis=1) > dark)
    cols = np.flatnonzero(luma.mean(axis=0) > dark)
    if rows.size < 8 or cols.size < 8:
        return rgb
    if rows[0] == 0 and cols[0] == 0 and rows[-1] == rgb.shape[0] - 1 \
            and cols[-1] == rgb.shape[1] - 1:
        return rgb
    return np.ascontiguousarray(rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])


def hash_video(data: bytes | Path, *, seconds_per_hash: float = 1.0,
               limits: VideoLimits | None = None, prune_distance: int = -1,
               bars: bool = True, keyframes: int = 0, scene_distance: int = 48) -> VideoHashes:
    """Decode untrusted video bytes (or a file) and hash frames as vPDQ does.

    `seconds_per_hash` 0 hashes every frame. `prune_distance` >= 0 drops a frame within that
    many bits of the previous kept frame; -1 (the default, as vPDQ) keeps every sampled
    frame. `bars` (default on; off reproduces Meta's hashes exactly) crops letterbox bars
    before hashing, so a letterboxed copy matches the original (vPDQ alone does not).

    `keyframes` > 0 also keeps up to that many pictures for the image signals: scene changes
    among the sampled frames (PDQ farther than `scene_distance` bits from every kept scene,
    quality >= 50), spread over the whole video (candidates are thinned by halves as they
    accumulate, then taken evenly), so a run of benign scenes at the start cannot push the
    rest out."""
    import av
    import pdqhash

    limits = limits or VideoLimits()
    if seconds_per_hash < 0:
        raise InvalidContent(f"seconds_per_hash must be >= 0; received {seconds_per_hash}")
    container = _open(data, limits)  # checks the size before anything is read
    try:
        exact = exact_hashes(data.read_bytes() if isinstance(data, Path) else data)
        stream = container.streams.video[0]
        width, height, duration = _check_stream(container, stream, limits)
        stream.thread_type = "AUTO"
        # vPDQ's sampling: every frame_mod-th decoded frame, frame_mod = seconds x frame rate
        frame_mod = max(1, int(seconds_per_hash * _fps(stream)))
        frames: list[FrameHash] = []
        scenes = _Scenes(keyframes, scene_distance)
        decoded = 0
        last_t = 0.0
        try:
            for decoded, frame in enumerate(container.decode(stream)):
                if frame.width * frame.height > limits.max_frame_pixels:
                    raise ContentTooLarge(
                        f"a video frame is {frame.width}x{frame.height}; at most "
                        f"{limits.max_frame_pixels} pixels are allowed")
                t = float(frame.time) if frame.time is not None else decoded / _fps(stream)
                last_t = max(last_t, t)
                if last_t > limits.max_duration_s:
                    raise ContentTooLarge(f"video runs past {limits.max_duration_s:.0f} s; at "
                                          f"most {limits.max_duration_s:.0f} s are allowed")
                if decoded % frame_mod:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                bits, quality = pdqhash.compute(crop_bars(rgb) if bars else rgb)
                frames.append(FrameHash(decoded, int(quality), pdq_bits_to_hex(bits),
                                        round(t, 3)))
                scenes.offer(frames[-1], rgb)
                if len(frames) > limits.max_hashed_frames:
                    raise ContentTooLarge(
                        f"video yields more than {limits.max_hashed_frames} hashed frames; "
                        f"at most {limits.max_hashed_frames} are allowed (raise "
                        "seconds_per_hash)")
        except av.error.FFmpegError as exc:
            if not frames:
                raise InvalidContent(f"video could not be decoded ({type(exc).__name__}); "
                                     "the file may be truncated or corrupt") from exc
            # a truncated tail: keep what decoded (the hashes describe the readable part)
        if not frames:
            raise InvalidContent("video has no decodable frames; the file may be truncated "
                                 "or empty")
        return VideoHashes(md5=exact[MD5], sha256=exact[SHA256],
                           frames=tuple(prune(frames, prune_distance)),
                           duration_s=round(duration if duration is not None else last_t, 3),
                           width=width, height=height, decoded_frames=decoded + 1,
                           keyframes=scenes.pick())
    finally:
        container.close()


class _Scenes:
    """Keyframe candidates while decoding: a sampled frame of quality >= 50 whose PDQ is
    farther than `distance` bits from every candidate so far; more than 4 x `n` candidates
    are halved (every other one dropped), and `pick` takes `n` evenly spaced."""

    def __init__(self, n: int, distance: int) -> None:
        self.n, self.distance = n, distance
        self.kept: list[Keyframe] = []
        self.hashes: list[str] = []  # PDQ of each kept candidate

    def offer(self, f: FrameHash, rgb: np.ndarray) -> None:
        if self.n <= 0 or f.quality < 50:
            return
        if any(hamming_hex(f.pdq, h) <= self.distance for h in self.hashes):
            return
        from PIL import Image

        img = Image.fromarray(rgb)
        img.thumbnail((KEYFRAME_SIDE, KEYFRAME_SIDE))
        self.kept.append(Keyframe(f.timestamp, f.frame, img))
        self.hashes.append(f.pdq)
        if len(self.kept) > 4 * self.n:
            self.kept, self.hashes = self.kept[::2], self.hashes[::2]

    def pick(self) -> tuple[Keyframe, ...]:
        if len(self.kept) <= self.n:
            return tuple(self.kept)
        idx = np.linspace(0, len(self.kept) - 1, self.n).round().astype(int)
        return tuple(self.kept[i] for i in dict.fromkeys(idx.tolist()))


def keyframe_sheet(keyframes: Sequence[Keyframe], *, tile: int = 320, quality: int = 80
                   ) -> bytes:
    """The keyframes as one JPEG contact sheet (up to 4 a row, each labelled with its time),
    so the review screen shows a video as one image: blurred and greyscale like any other,
    no playback, no audio."""
    from PIL import Image, ImageDraw

    if not keyframes:
        raise InvalidContent("a video without keyframes has no contact sheet")
    cols = min(4, len(keyframes))
    rows = -(-len(keyframes) // cols)
    sheet = Image.new("RGB", (cols * tile, rows * (tile + 20)), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for i, kf in enumerate(keyframes):
        img = kf.image.convert("RGB")
        img.thumbnail((tile, tile))
        x, y = (i % cols) * tile, (i // cols) * (tile + 20)
        sheet.paste(img, (x + (tile - img.width) // 2, y + 20 + (tile - img.height) // 2))
        draw.text((x + 4, y + 4), f"{kf.timestamp:.1f} s", fill=(230, 230, 230))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _check_stream(container: Any, stream: Any, limits: VideoLimits
                  ) -> tuple[int, int, float | None]:
    """Frame size and duration from the headers, against the limits."""
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise InvalidContent(f"video stream has invalid frame size {width}x{height}")
    if width * height > limits.max_frame_pixels:
        raise ContentTooLarge(f"video frames are {width}x{height} = {width * height} "
                              f"pixels; at most {limits.max_frame_pixels} are allowed")
    duration = _duration(container, stream)
    if duration is not None and duration > limits.max_duration_s:
        raise ContentTooLarge(f"video is {duration:.1f} s long; at most "
                              f"{limits.max_duration_s:.0f} s are allowed")
    return width, height, duration


def probe_video(data: bytes, limits: VideoLimits) -> None:
    """Header-level checks without decoding a frame: size, container, a video stream, frame
    size, duration. Raises the same typed errors as `hash_video`."""
    container = _open(data, limits)
    try:
        _check_stream(container, container.streams.video[0], limits)
    finally:
        container.close()


def _fps(stream: Any) -> float:
    rate = stream.average_rate or stream.base_rate or 30
    return float(rate) or 30.0


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return None


def prune(frames: Iterable[FrameHash], distance: int) -> list[FrameHash]:
    """Drop each frame within `distance` bits of the previous kept one (distance < 0: keep
    all; 0: drop exact repeats only)."""
    out: list[FrameHash] = []
    for f in frames:
        if distance >= 0 and out and hamming_hex(f.pdq, out[-1].pdq) <= distance:
            continue
        out.append(f)
    return out


# -- matching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A stretch of the query that matches the target: query and target time ranges (s)."""

    query_start: float
    query_end: float
    target_start: float
    target_end: float


@dataclass(frozen=True)
class VideoMatch:
    """vPDQ's two shares (percent) and the matching stretches."""

    query_match_pct: float
    target_match_pct: float
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    def is_match(self, query_pct: float = 80.0, target_pct: float = 80.0) -> bool:
        return self.query_match_pct >= query_pct and self.target_match_pct >= target_pct


def packed(frames: Sequence[FrameHash]) -> np.ndarray:
    """(n, 4) uint64, the layout of `hashing.index`."""
    if not frames:
        return np.empty((0, 4), np.uint64)
    from childguard.hashing.index import pack_hex

    return pack_hex([f.pdq for f in frames])


def match_pairs(query: Sequence[FrameHash], target: Sequence[FrameHash], qi: np.ndarray,
                ti: np.ndarray, *, quality: int = 50) -> VideoMatch:
    """The match from the (query index, target index) pairs within the distance (both lists
    already filtered by quality or not: frames under `quality` are left out here)."""
    q_ok = np.array([f.quality >= quality for f in query], dtype=bool)
    t_ok = np.array([f.quality >= quality for f in target], dtype=bool)
    keep = q_ok[qi] & t_ok[ti] if len(qi) else np.zeros(0, bool)
    qi, ti = qi[keep], ti[keep]
    nq, nt = int(q_ok.sum()), int(t_ok.sum())
    q_pct = 100.0 * len(np.unique(qi)) / nq if nq else 0.0
    t_pct = 100.0 * len(np.unique(ti)) / nt if nt else 0.0
    return VideoMatch(round(q_pct, 2), round(t_pct, 2), _segments(query, target, qi, ti))


#: matched query frames closer than this in time belong to one segment
SEGMENT_GAP_S = 2.0


def _segments(query: Sequence[FrameHash], target: Sequence[FrameHash], qi: np.ndarray,
              ti: np.ndarray) -> tuple[Segment, ...]:
    """Runs of matched query frames (no gap over `SEGMENT_GAP_S`), with the target times
    they matched."""
    if not len(qi):
        return ()
    best: dict[int, list[int]] = {}
    for q, t in zip(qi.tolist(), ti.tolist(), strict=True):
        best.setdefault(q, []).append(t)
    out: list[Segment] = []
    run: list[int] = []
    for q in sorted(best):
        if run and query[q].timestamp - query[run[-1]].timestamp > SEGMENT_GAP_S:
            out.append(_seg(query, target, run, best))
            run = []
        run.append(q)
    if run:
        out.append(_seg(query, target, run, best))
    return tuple(out)


def _seg(query: Sequence[FrameHash], target: Sequence[FrameHash], run: list[int],
         best: dict[int, list[int]]) -> Segment:
    ts = [target[t].timestamp for q in run for t in best[q]]
    return Segment(query[run[0]].timestamp, query[run[-1]].timestamp, min(ts), max(ts))


def match_videos(query: Sequence[FrameHash], target: Sequence[FrameHash], *,
                 distance: int = 31, quality: int = 50) -> VideoMatch:
    """Brute force, as vPDQ's reference matcher (the index path must agree with this)."""
    if not query or not target:
        return VideoMatch(0.0, 0.0)
    from childguard.hashing.index import hamming

    qp, tp = packed(query), packed(target)
    d = np.stack([hamming(tp, q[None, :]) for q in qp]).astype(np.int32)  # (nq, nt)
    qi, ti = np.nonzero(d <= distance)
    return match_pairs(query, target, qi, ti, quality=quality)


# -- Meta's text format ----------------------------------------------------------------------


def parse_vpdq(text: str, *, where: str = "vpdq file") -> list[FrameHash]:
    """Meta's vPDQ text format: one frame a line, `frame,quality,hash,timestamp`."""
    out: list[FrameHash] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            raise InvalidContent(f"{where}:{n}: expected 'frame,quality,hash,timestamp'; "
                                 f"received {len(parts)} fields")
        try:
            frame, quality, ts = int(parts[0]), int(parts[1]), float(parts[3])
        except ValueError as exc:
            raise InvalidContent(f"{where}:{n}: frame and quality must be integers and the "
                                 "timestamp a number") from exc
        h = parts[2].lower()
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            raise InvalidContent(f"{where}:{n}: a PDQ hash is 64 hex digits")
        if not 0 <= quality <= 100:
            raise InvalidContent(f"{where}:{n}: quality must be 0..100; received {quality}")
        out.append(FrameHash(frame, quality, h, ts))
    if not out:
        raise InvalidContent(f"{where}: no frame hashes")
    return out


def format_vpdq(frames: Iterable[FrameHash]) -> str:
    return "".join(f"{f.frame},{f.quality},{f.pdq},{f.timestamp:.3f}\n" for f in frames)


# -- a bank of videos --------------------------------------------------------------------


class VideoIndex:
    """Videos' frame hashes in the PDQ multi-index (`hashing.index.MatchIndex`), each frame
    under its video: a query's frames find candidate videos in one batched search, and the
    (query frame, bank frame) pairs within the radius give vPDQ's two shares exactly as the
    brute-force matcher would (the index misses nothing within its radius). Frames under the
    quality bar are not indexed (they never count)."""

    def __init__(self, *, distance: int = 31, quality: int = 50) -> None:
        from childguard.hashing.index import MatchIndex

        self.distance, self.quality = distance, quality
        self._index = MatchIndex(design_radius=distance)
        self._videos: list[tuple[str, tuple[FrameHash, ...]]] = []
        self._owner = np.empty(0, np.int64)  # gid -> video number
        self._pos = np.empty(0, np.int64)  # gid -> frame position in its video

    def __len__(self) -> int:
        return len(self._videos)

    @property
    def frames(self) -> int:
        return int(self._owner.size)

    def add(self, video_id: str, frames: Sequence[FrameHash]) -> None:
        good = [i for i, f in enumerate(frames) if f.quality >= self.quality]
        number = len(self._videos)
        self._videos.append((video_id, tuple(frames)))
        if not good:
            return
        start = self._owner.size
        self._owner = np.concatenate([self._owner, np.full(len(good), number, np.int64)])
        self._pos = np.concatenate([self._pos, np.asarray(good, np.int64)])
        self._index.add(packed([frames[i] for i in good]),
                        np.arange(start, start + len(good), dtype=np.int64))

    def search(self, query: Sequence[FrameHash], *, query_pct: float = 80.0,
               target_pct: float = 80.0) -> list[tuple[str, VideoMatch]]:
        """Bank videos that match the query (both shares at or over the thresholds), best
        first."""
        good = [i for i, f in enumerate(query) if f.quality >= self.quality]
        if not good or not self.frames:
            return []
        rows, gids, _ = self._index.search(packed([query[i] for i in good]), self.distance)
        if not rows.size:
            return []
        qi = np.asarray(good, np.int64)[rows]
        owners = self._owner[gids]
        out: list[tuple[str, VideoMatch]] = []
        for number in np.unique(owners).tolist():
            sel = owners == number
            video_id, frames = self._videos[number]
            m = match_pairs(query, frames, qi[sel], self._pos[gids[sel]], quality=self.quality)
            if m.is_match(query_pct, target_pct):
                out.append((video_id, m))
        out.sort(key=lambda vm: -(vm[1].query_match_pct + vm[1].target_match_pct))
        return out
