"""Benchmark the HTTP service (Ray Serve) against the in-process pipeline on the same items.

Why this way: the question is what the service layer costs (HTTP, auth, Ray hops, storing the
verdict) on top of the pipeline's own work, and what throughput the cascade reaches when the
gate keeps benign items away from the judge. So the same items go (1) through the running
service from this separate process over loopback, one at a time (latency) and concurrently
(throughput), and (2) through an in-process `Pipeline` with the same models, in the same run.

By default it starts the service itself (`childguard serve` in a subprocess with a private
home, on a free loopback port) and stops it at the end; `--url URL --key KEY` drives a service
that is already running instead. Items: XSTest *safe* prompts (text), Kodak photos (image) and
both together (mixed), and benign photos it places in a test bank of its private home
(hash: the hash-hit path); prompts are never printed. Output: one JSON object on stdout, with
latency per traffic kind and per path through the cascade (`by_path`: hash hit, decided by
the cheap signals, judged).

    .venv/bin/python benchmarks/serve.py                      # reference models (overhead)
    .venv/bin/python benchmarks/serve.py --models real --judge reference --probe-dir DIR
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DATASETS = (REPO / ".." / "shared" / "datasets").resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BANK = "bench-known"
#: photos placed in a test bank for the hash-hit path (Meta's PDQ test photo and its edits,
#: benign; not among the Kodak photos the other kinds send)
HASH_DIR = DATASETS / "images" / "pdq_threatexchange" / "bridge-mods"


def bank_photos(n: int) -> list[Path]:
    return sorted(p for p in HASH_DIR.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:n]


def add_bank(env: dict[str, str], photos: list[Path]) -> None:
    """Put `photos` into a positive test bank of the benchmark's private home, before the
    service starts (a 'known bad' hash here is a benign photo in a test bank)."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("CHILDGUARD_")})
    from childguard.hashing.service import HashService
    from childguard.schema import Severity
    from childguard.settings import Settings
    from childguard.store.store import Store

    settings = Settings.load()
    store = Store.from_settings(settings)
    try:
        svc = HashService.from_settings(settings, store.engine)
        svc.ensure_bank(BANK, category="sexual_minors", severity=Severity.CRITICAL,
                        added_by="benchmark")
        for p in photos:
            svc.add_bytes(BANK, p.read_bytes(), added_by="benchmark")
    finally:
        store.close()


def path_of(verdict: dict[str, Any]) -> str:
    """Which way through the cascade a verdict went."""
    if verdict.get("status") == "error":
        return "error"
    if any(c.get("source") == "hash" for c in verdict.get("categories", ())):
        return "hash_hit"
    return "judged" if verdict.get("judged") else "cheap_signals"


def load_items(n_text: int, n_image: int,
               hash_photos: Sequence[Path] = ()) -> dict[str, list[dict[str, Any]]]:
    """Request bodies per traffic kind (text-only, image-only, mixed, and banked photos)."""
    with (DATASETS / "xstest" / "xstest_prompts.csv").open(encoding="utf-8") as fh:
        texts = [r["prompt"] for r in csv.DictReader(fh) if r["label"] == "safe"][:n_text]
    images = sorted((DATASETS / "images" / "kodak").glob("*.png"))[:n_image]
    b64 = [base64.b64encode(p.read_bytes()).decode("ascii") for p in images]
    mixed = [{"text": t, "image": b64[i % len(b64)]} for i, t in enumerate(texts[:n_image])]
    out = {
        "text": [{"text": t} for t in texts],
        "image": [{"image": b} for b in b64],
        "mixed": mixed,
    }
    if hash_photos:
        out["hash"] = [{"image": base64.b64encode(p.read_bytes()).decode("ascii")}
                       for p in hash_photos]
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return round(ordered[k], 3)


def _summary(latencies_ms: list[float], wall_s: float, verdicts: list[dict[str, Any]]
             ) -> dict[str, Any]:
    judged = sum(1 for v in verdicts if v.get("judged"))
    return {
        "n": len(latencies_ms),
        "p50_ms": _pct(latencies_ms, 50),
        "p95_ms": _pct(latencies_ms, 95),
        "p99_ms": _pct(latencies_ms, 99),
        "mean_ms": round(statistics.fmean(latencies_ms), 3) if latencies_ms else None,
        "throughput_per_s": round(len(latencies_ms) / wall_s, 2) if wall_s > 0 else None,
        "decided_without_judge": round(1 - judged / len(verdicts), 4) if verdicts else None,
        "decisions": {d: sum(1 for v in verdicts if v.get("decision") == d)
                      for d in ("allow", "review", "block")},
        "errors": sum(1 for v in verdicts if v.get("status") == "error"),
        # latency by the way each item went: a hash hit, decided by the cheap signals (gate
        # or probes), judged, or failed
        "by_path": {
            p: {"n": len(ms), "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95)}
            for p in ("hash_hit", "cheap_signals", "judged", "error")
            if (ms := [x for x, v in zip(latencies_ms, verdicts, strict=True)
                       if path_of(v) == p])
        },
    }


def drive(url: str, key: str, bodies: list[dict[str, Any]], concurrency: int
          ) -> tuple[list[float], float, list[dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {key}"}
    local = threading.local()

    def one(body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=120.0)
        t0 = time.perf_counter()
        resp = client.post(f"{url}/v1/classify", json=body, headers=headers)
        ms = (time.perf_counter() - t0) * 1000.0
        if resp.status_code != 200:
            raise RuntimeError(f"service answered {resp.status_code}: {resp.text[:200]}")
        verdict = resp.json()
        timing = dict(
            part.strip().split(";dur=") for part in resp.headers.get("server-timing", "").split(",")
            if ";dur=" in part
        )
        verdict["_store_ms"] = float(timing.get("store", "nan"))
        verdict["_classify_ms"] = float(timing.get("classify", "nan"))
        return ms, verdict

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - t0
    return [r[0] for r in results], wall, [r[1] for r in results]


def in_process(pipeline: Any, bodies: list[dict[str, Any]]
               ) -> tuple[list[float], float, list[dict[str, Any]]]:
    from childguard.schema import ContentItem

    items = [ContentItem.model_validate(b) for b in bodies]
    lat, verdicts = [], []
    t0 = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        v = pipeline.classify(item)
        lat.append((time.perf_counter() - t) * 1000.0)
        verdicts.append(v.model_dump(mode="json"))
    wall = time.perf_counter() - t0
    return lat, wall, verdicts


def pipeline_for(settings: Any, models: str) -> Any:
    """The same components the service builds for `models` (one builder: pipeline.assembly)."""
    from childguard.pipeline import build_pipeline

    return build_pipeline(settings, models=models)


def _policy_without_gate(home: Path) -> Path:
    """A copy of the default policy whose gate is off (so every item is judged)."""
    import shutil

    import yaml

    src = REPO / "policies" / "child_safety"
    dst = home / "judge-all-policies" / src.name  # the folder name must be the policy id
    shutil.copytree(src, dst)
    spec = yaml.safe_load((dst / "policy.yaml").read_text(encoding="utf-8"))
    spec["gate"]["enabled"] = False
    (dst / "policy.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return dst


def start_service(env: dict[str, str], port: int, models: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "childguard.cli", "serve", "--port", str(port)]
    if models == "reference":
        cmd.append("--reference-models")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    key = None
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        if "admin key" in line:
            key = line.rsplit(":", 1)[1].strip()
        if "press Ctrl-C" in line or time.monotonic() > deadline:
            break
    if key is None or proc.poll() is not None:
        proc.terminate()
        raise RuntimeError("the service did not start (run `childguard serve` to see why)")
    threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
    return proc, key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="a running service (default: start one)")
    ap.add_argument("--key", help="API key for --url (service or admin role)")
    ap.add_argument("--models", choices=("reference", "real"), default="reference")
    ap.add_argument("--judge", choices=("reference", "llama_cpp", "openai"), default="reference")
    ap.add_argument("--probe-dir", type=Path, help="trained probes (enables the gate)")
    ap.add_argument("--n-text", type=int, default=60)
    ap.add_argument("--n-image", type=int, default=24)
    ap.add_argument("--hash-hits", type=int, default=6,
                    help="banked photos sent as their own kind (the hash-hit path); "
                         "0 with --url (the benchmark banks them in its private home)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--judge-all", action="store_true",
                    help="disable the gate (a policy copy with gate.enabled=false): every item "
                         "goes to the judge, the baseline the gate is measured against")
    ap.add_argument("--stage-timeout", type=float,
                    help="serve.stage_timeout_s for the service and the in-process pipeline: "
                         "with the judge as the bottleneck, queued judge calls past the default "
                         "30 s fail closed (review), which measures the queue, not the service")
    ap.add_argument("--no-compare", action="store_true",
                    help="throughput only: skip the one-at-a-time service vs in-process run")
    args = ap.parse_args()
    if min(args.n_text, args.n_image) < 1 or args.n_text > 250 or args.n_image > 24:
        ap.error("--n-text must be 1..250 and --n-image 1..24 (bounded request counts)")
    if not 0 <= args.hash_hits <= 10:
        ap.error("--hash-hits must be 0..10")
    hash_photos = [] if args.url else bank_photos(args.hash_hits)

    home = Path(tempfile.mkdtemp(prefix="cg-bench-serve-"))
    env = {**os.environ, "CHILDGUARD_HOME": str(home), "CHILDGUARD_JUDGE__BACKEND": args.judge}
    if args.probe_dir:
        env["CHILDGUARD_MODELS__PROBE_DIR"] = str(args.probe_dir.resolve())
    default_home = Path.home() / ".local" / "share" / "childguard"
    if os.environ.get("CHILDGUARD_HOME") is None:  # reuse pulled weights from the default home
        env.setdefault("CHILDGUARD_MODELS__CACHE_DIR", str(default_home / "models"))
    if args.models == "real" and (default_home / "encoders").is_dir():
        # the fine-tuned encoder `make run` trained (its probes were trained on it): without
        # it the private home would embed with the packaged weights and no probe would match
        (home / "encoders").symlink_to(default_home / "encoders", target_is_directory=True)
    if args.stage_timeout:
        env["CHILDGUARD_SERVE__STAGE_TIMEOUT_S"] = str(args.stage_timeout)
    if args.judge_all:
        env["CHILDGUARD_POLICY"] = str(_policy_without_gate(home))
    proc = None
    if args.url:
        if not args.key:
            ap.error("--url needs --key")
        url, key = args.url.rstrip("/"), args.key
        if not url.startswith(("http://127.", "http://localhost")):
            ap.error("loopback only: --url must be http://127.x.x.x:PORT or localhost")
    else:
        port = _free_port()
        if hash_photos:
            add_bank(env, hash_photos)
        t0 = time.perf_counter()
        proc, key = start_service(env, port, args.models)
        url = f"http://127.0.0.1:{port}"
        start_s = round(time.perf_counter() - t0, 1)
    # the in-process pipeline: same settings, same models, in this process, same run
    os.environ.update({k: v for k, v in env.items() if k.startswith("CHILDGUARD_")})
    from childguard.settings import Settings

    pipeline = None if args.no_compare else pipeline_for(Settings.load(), args.models)
    try:
        bodies = load_items(args.n_text, args.n_image, hash_photos)
        for kind in ("text", "image"):  # warm-up: first calls load lazy state in replicas
            drive(url, key, bodies[kind][:2], 1)
            if pipeline is not None:
                in_process(pipeline, bodies[kind][:2])
        report: dict[str, Any] = {
            "models": args.models, "judge": args.judge, "probes": bool(args.probe_dir),
            "concurrency": args.concurrency, "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2), "judge_all": args.judge_all,
            "stage_timeout_s": args.stage_timeout,
        }
        if proc is not None:
            report["service_start_s"] = start_s
        service: dict[str, Any] = {}
        sequential: dict[str, Any] = {}
        local: dict[str, Any] = {}
        overhead: dict[str, Any] = {}
        for kind, items in bodies.items():
            lat, wall, verdicts = drive(url, key, items, args.concurrency)
            service[kind] = _summary(lat, wall, verdicts)
            if args.no_compare:
                continue
            # one at a time, service and in-process interleaved item by item, so both see the
            # same background load (this machine is shared); overhead = paired differences
            s_lat: list[float] = []
            s_v: list[dict[str, Any]] = []
            l_lat: list[float] = []
            l_v: list[dict[str, Any]] = []
            for body in items:
                ms, v = drive(url, key, [body], 1)[0::2]
                s_lat += ms
                s_v += v
                ms, _, v = in_process(pipeline, [body])
                l_lat += ms
                l_v += v
            wall_s = sum(s_lat) / 1000.0
            sequential[kind] = _summary(s_lat, wall_s, s_v)
            sequential[kind]["pipeline_total_ms_p50"] = _pct(
                [v["timings_ms"].get("total", 0.0) for v in s_v], 50
            )
            local[kind] = _summary(l_lat, sum(l_lat) / 1000.0, l_v)
            paired = [a - b for a, b in zip(s_lat, l_lat, strict=True)]
            store = [v["_store_ms"] for v in s_v]
            overhead[kind] = {
                # everything the service adds: HTTP, auth, Ray hops, storing the verdict
                "service_p50_ms": _pct(paired, 50),
                "service_p95_ms": _pct(paired, 95),
                # the same without the verdict store write (the in-process run does not store)
                "serve_without_store_p50_ms": _pct(
                    [d - st for d, st in zip(paired, store, strict=True)], 50
                ),
                "store_write_p50_ms": _pct(store, 50),
            }
        all_lat, all_wall, all_v = drive(url, key, [b for k in bodies for b in bodies[k]],
                                         args.concurrency)
        service["all"] = _summary(all_lat, all_wall, all_v)
        report["service_concurrent"] = service
        report["service_sequential"] = sequential
        report["in_process_sequential"] = local
        report["serve_overhead_vs_in_process"] = overhead
    finally:
        if pipeline is not None:
            pipeline.close()
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
