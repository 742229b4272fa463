"""Shared secrets and HMAC signatures of the review loop.

Three secrets, each with one job, generated once and kept in `<home>/review/secrets.json`
(mode 0600) unless settings provide them:
- `webhook_secret`: Label Studio sends it in a header with every webhook; we compare it in
  constant time (Label Studio cannot sign bodies, so a shared header is what it offers).
- `media_key`: signs media URLs (`exp` + `sig` query). Label Studio's browser fetches images from
  us without our API key, so the URL itself is the credential, and it expires.
- `callback_key`: signs the notification we POST to a product service's callback URL
  (`X-Childguard-Signature: t=<unix>,v1=<hex hmac-sha256 of "<t>.<body>">`), so the receiver
  can check it came from us and is fresh.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from childguard.settings import Settings

SECRETS_FILE = "secrets.json"
SIGNATURE_HEADER = "X-Childguard-Signature"
WEBHOOK_SECRET_HEADER = "X-Childguard-Webhook-Secret"


@dataclass(frozen=True)
class ReviewSecrets:
    webhook_secret: str
    media_key: str
    callback_key: str

    @classmethod
    def generate(cls) -> ReviewSecrets:
        return cls(
            webhook_secret=secrets.token_urlsafe(32),
            media_key=secrets.token_urlsafe(32),
            callback_key=secrets.token_urlsafe(32),
        )

    @classmethod
    def load_or_create(cls, path: Path) -> ReviewSecrets:
        if path.is_file():
            data = json.loads(path.read_text())
            return cls(**{k: data[k] for k in ("webhook_secret", "media_key", "callback_key")})
        fresh = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(fresh), fh)
        try:
            os.link(tmp, path)  # first writer wins; a concurrent loser reads the winner's file
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return cls.load_or_create(path)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReviewSecrets:
        """Secrets from `<home>/review/secrets.json`; a configured webhook secret wins."""
        stored = cls.load_or_create(settings.home / "review" / SECRETS_FILE)
        if settings.review.webhook_secret:
            return cls(settings.review.webhook_secret, stored.media_key, stored.callback_key)
        return stored


def _hmac_hex(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


# -- media URLs ---------------------------------------------------------------------------


def sign_media(key: str, media_id: str, exp: int) -> str:
    return _hmac_hex(key, f"media:{media_id}:{exp}")


def media_url(base_url: str, key: str, media_id: str, *, ttl_s: float, now: float | None = None
              ) -> str:
    """`<base>/v1/media/<id>?exp=<unix>&sig=<hex>`, valid for `ttl_s` seconds."""
    exp = int((now if now is not None else time.time()) + ttl_s)
    sig = sign_media(key, media_id, exp)
    return f"{base_url.rstrip('/')}/v1/media/{media_id}?exp={exp}&sig={sig}"


def check_media(key: str, media_id: str, exp: int, sig: str, *,
                now: float | None = None) -> str | None:
    """None if the signature is valid and unexpired, else the reason it is not."""
    if exp < (now if now is not None else time.time()):
        return "expired"
    # bytes, not str: compare_digest refuses non-ASCII str, and `sig` comes from the client
    expected = sign_media(key, media_id, exp).encode()
    if not hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
        return "bad signature"
    return None


# -- webhook secret -----------------------------------------------------------------------


def check_webhook_secret(expected: str, received: str | None) -> bool:
    return received is not None and hmac.compare_digest(expected.encode(), received.encode())


# -- callback notifications ---------------------------------------------------------------


def sign_callback(key: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The `X-Childguard-Signature` header value for `body`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_callback(key: str, body: bytes, header: str, *, max_age_s: float = 300.0,
                    now: float | None = None) -> bool:
    """What a receiver runs: signature matches and the timestamp is fresh."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
        mac = parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - t) > max_age_s:
        return False
    expected = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace"))
