"""Priority, SLA, backoff and signatures: the pure parts of the queue."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from review_unit_support import policy, review_verdict

from childguard.review_bridge.signing import (
    ReviewSecrets,
    check_media,
    media_url,
    sign_callback,
    verify_callback,
)
from childguard.review_bridge.worker import backoff_s, item_severity, priority, sla_due
from childguard.schema import Decision, Severity, Verdict
from childguard.settings import ReviewSettings


def test_priority_orders_by_severity_then_uncertainty() -> None:
    pol = policy()
    th = pol.spec.category("grooming").thresholds
    mid = (th.review + th.block) / 2
    critical_mid = priority(review_verdict("a", pol, score=mid), pol)
    critical_edge = priority(review_verdict("b", pol, score=th.review), pol)
    assert critical_mid > critical_edge
    low_sev = [c for c in pol.spec.categories if c.severity.rank < Severity.CRITICAL.rank]
    if low_sev:
        other = low_sev[0]
        mid_o = (other.thresholds.review + other.thresholds.block) / 2
        assert critical_edge > priority(review_verdict("c", pol, code=other.code, score=mid_o),
                                        pol)
    errored = Verdict(item_id="e", decision=Decision.REVIEW, errors=("x: y",))
    assert item_severity(errored, pol) is Severity.HIGH
    # an error verdict that kept the probes' scores: at least high, and maximally uncertain
    # (a stage did not run), whatever its categories say
    scored = review_verdict("f", pol, score=th.review).model_copy(update={"errors": ("judge: x",)})
    assert item_severity(scored, pol).rank >= Severity.HIGH.rank
    assert priority(scored, pol) == 100 * item_severity(scored, pol).rank + 99
    if low_sev:
        low = review_verdict("g", pol, code=low_sev[0].code, score=0.0)
        low_err = low.model_copy(update={"errors": ("judge: x",)})
        assert item_severity(low_err, pol) is max(
            low_sev[0].severity, Severity.HIGH, key=lambda s: s.rank)


def test_sla_deadline_per_severity() -> None:
    review = ReviewSettings()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert sla_due(Severity.CRITICAL, t0, review) == t0 + timedelta(hours=1)
    assert sla_due(Severity.LOW, t0, review) == t0 + timedelta(hours=72)


def test_backoff_grows_and_caps() -> None:
    delays = [backoff_s(n, jitter=0.0) for n in range(1, 12)]
    assert delays[0] == 2.0 and delays[1] == 4.0 and delays[2] == 8.0
    assert max(delays) == 300.0 and delays == sorted(delays)


def test_media_signature_expiry_and_tampering() -> None:
    now = time.time()
    url = media_url("http://svc", "key", "ab" * 16, ttl_s=60, now=now)
    exp = int(url.split("exp=")[1].split("&")[0])
    sig = url.split("sig=")[1]
    assert check_media("key", "ab" * 16, exp, sig, now=now) is None
    assert check_media("key", "ab" * 16, exp, sig, now=now + 61) == "expired"
    assert check_media("key", "cd" * 16, exp, sig, now=now) == "bad signature"
    assert check_media("key", "ab" * 16, exp + 3600, sig, now=now) == "bad signature"
    assert check_media("other", "ab" * 16, exp, sig, now=now) == "bad signature"
    # a client-sent signature with non-ASCII characters is a bad signature, not a crash
    assert check_media("key", "ab" * 16, exp, "\u00e9" * len(sig), now=now) == "bad signature"


def test_callback_signature() -> None:
    body = b'{"item_id":"x"}'
    header = sign_callback("k", body, timestamp=1_000)
    assert verify_callback("k", body, header, now=1_010)
    assert not verify_callback("k", body + b" ", header, now=1_010)
    assert not verify_callback("k", body, header, now=2_000)  # stale
    assert not verify_callback("k", body, "garbage", now=1_010)
    assert not verify_callback("k", body, "t=1000,v1=\u00e9\u00e9", now=1_010)


def test_secrets_are_generated_once_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "review" / "secrets.json"
    first = ReviewSecrets.load_or_create(path)
    assert ReviewSecrets.load_or_create(path) == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len({first.webhook_secret, first.media_key, first.callback_key}) == 3
