"""Who may do what: the four API-key roles.

Roles are deliberately coarse (one per kind of user) so the endpoint x role matrix stays small
enough to test in full. `admin` passes every role check; the others are disjoint on purpose: a
classification service key must not be able to read review media or mint keys.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    SERVICE = "service"  # product services: classify, read verdicts
    REVIEWER = "reviewer"  # human review: media, review decisions
    POLICY_AUTHOR = "policy_author"  # policies, evaluation, hash banks content
    ADMIN = "admin"  # keys, banks, media, everything

    @classmethod
    def parse(cls, value: str) -> Role:
        """The role named `value`, or a ValueError listing the allowed names."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            allowed = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown role {value!r}; allowed: {allowed}") from None


def role_allows(granted: Role, required: frozenset[Role] | set[Role] | tuple[Role, ...]) -> bool:
    """True when a key with role `granted` may call something that requires one of `required`."""
    return granted is Role.ADMIN or granted in required
