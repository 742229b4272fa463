"""Keeping content out of verdicts and logs: the redactor and the stable error codes.

Why: an exception may echo its input and a model may quote the message, and a Ray error's text
carries a remote traceback with colour codes, actor ids and addresses. What reaches a client
is `<code> (<Type>)[: short message]` with every run of the item's characters removed; the
traceback goes to the server log with the item id.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable, Sequence

from childguard.errors import ChildguardError, DependencyError, ModelUnavailable, UserError

__all__ = ["ERROR_CODES", "Redactor", "describe_exception", "error_code", "sanitize",
           "timeout_error"]


class Redactor:
    """Removes any run of characters copied from the item's content from a string.

    Used on error messages (an exception may echo its input) and on the judge's rationale (a
    model may quote the message), so that verdicts and logs never carry raw content. A run of
    `window` characters found verbatim in any secret is replaced; a secret shorter than the
    window is replaced wherever it occurs whole.
    """

    REPLACEMENT = "[content removed]"

    def __init__(self, secrets: Sequence[str | None], window: int = 12) -> None:
        self.window = window
        self._secrets = [s for s in secrets if s and len(s.strip()) >= 4]

    def with_secret(self, secret: str | None) -> Redactor:
        return Redactor([*self._secrets, secret], self.window)

    def __call__(self, text: str) -> str:
        if not text or not self._secrets:
            return text
        marked = bytearray(len(text))
        w = self.window
        for secret in self._secrets:
            if len(secret) < w:
                start = text.find(secret)
                while start >= 0:
                    marked[start : start + len(secret)] = b"\x01" * len(secret)
                    start = text.find(secret, start + 1)
                continue
            for i in range(0, max(len(text) - w + 1, 0)):
                if text[i : i + w] in secret:
                    marked[i : i + w] = b"\x01" * w
        if not any(marked):
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if marked[i]:
                while i < len(text) and marked[i]:
                    i += 1
                out.append(self.REPLACEMENT)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


#: the stable error codes a failed stage reports in `Verdict.errors` ("<stage>: <code> ...")
ERROR_CODES = ("timeout", "model_unavailable", "dependency_down", "invalid_input",
               "worker_died", "stage_failed")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\b[0-9a-f]{24,}\b")


def _unwrapped(exc: BaseException) -> BaseException:
    """The user-level exception inside a Ray wrapper (RayTaskError keeps it as `cause`)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def error_code(exc: BaseException) -> str:
    inner = _unwrapped(exc)
    if isinstance(inner, TimeoutError | concurrent.futures.TimeoutError):
        return "timeout"
    if isinstance(inner, ModelUnavailable):
        return "model_unavailable"
    if isinstance(inner, DependencyError):
        return "dependency_down"
    if isinstance(inner, UserError):
        return "invalid_input"
    if any(k in type(exc).__name__ for k in ("ActorDied", "ActorError", "ActorUnavailable",
                                             "WorkerCrashed", "NodeDied")):
        return "worker_died"
    return "stage_failed"


def sanitize(text: str, limit: int = 200) -> str:
    """One short line: no terminal colour codes, addresses, actor or object ids, newlines."""
    text = _ANSI.sub("", text)
    text = _ADDRESS.sub("[address]", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_exception(exc: BaseException, redact: Callable[[str], str]) -> str:
    """`<code> (<Type>)`, plus the message for our own errors (they quote sizes and limits,
    not content), sanitised and with content removed. Other exceptions' messages, which may
    hold tracebacks, addresses or the item itself, stay in the server log only."""
    inner = _unwrapped(exc)
    kind = re.sub(r"[^A-Za-z0-9_]", "", type(inner).__name__)[:60] or "Exception"
    head = f"{error_code(exc)} ({kind})"
    if isinstance(inner, ChildguardError):
        msg = sanitize(redact(str(inner)))
        return f"{head}: {msg}" if msg else head
    return head


def timeout_error(timeout_s: float) -> str:
    return f"timeout: no answer within {timeout_s:g} s"

