"""API key secrets: generation, the stored hash, and the lookup prefix.

A key looks like `cg_<key id>_<secret>`: the key id (8 random bytes, hex) is the public part,
used to find the row without scanning; the secret is 32 random bytes (256 bits, url-safe
base64). Only `sha256(salt || secret)` is stored, with a random per-key salt.

Why a fast hash and not bcrypt/argon2: those slow hashes exist to protect low-entropy human
passwords from offline guessing. A 256-bit random secret cannot be guessed however fast the hash
is, and a fast hash keeps authentication (done on every request) cheap. The salt costs nothing
and means equal secrets never show equal hashes. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from childguard.store.roles import Role

KEY_PREFIX = "cg"


@dataclass(frozen=True)
class ApiKeyInfo:
    """What the store tells about a key (never the secret)."""

    key_id: str
    name: str
    role: Role
    prefix: str
    created_at: datetime
    created_by: str = "system"
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict[str, object]:
        return {"key_id": self.key_id, "name": self.name, "role": self.role.value,
                "prefix": self.prefix, "created_at": self.created_at.isoformat(),
                "created_by": self.created_by,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
                "active": self.active}


@dataclass(frozen=True)
class NewKey:
    key_id: str
    prefix: str
    secret: str  # the full token, shown once
    salt: str
    secret_hash: str


def new_key() -> NewKey:
    key_id = secrets.token_hex(8)
    prefix = f"{KEY_PREFIX}_{key_id}"
    token = f"{prefix}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    return NewKey(key_id, prefix, token, salt, hash_secret(salt, token))


def hash_secret(salt: str, token: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode("utf-8")).hexdigest()


def matches(salt: str, stored_hash: str, token: str) -> bool:
    return hmac.compare_digest(hash_secret(salt, token), stored_hash)


def parse_prefix(token: str) -> str | None:
    """The lookup prefix `cg_<key id>` of a presented token, or None if it is not one of ours."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 16 or not parts[2]:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return f"{parts[0]}_{parts[1]}"


__all__ = ["ApiKeyInfo", "NewKey", "Role", "hash_secret", "matches", "new_key", "parse_prefix"]
