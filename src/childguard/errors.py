"""Error classes shared by every layer, mapped to exit codes and HTTP statuses in one place.

`UserError`: the caller sent something we do not accept (CLI exit 2, HTTP 4xx). Its message
says what was received and what is allowed. `DependencyError`: something we rely on is down or
missing (CLI exit 3, HTTP 503). Anything else is a bug; inside the pipeline it fails closed.
"""

from __future__ import annotations


class ChildguardError(Exception):
    """Base of all expected errors."""

    exit_code = 1
    http_status = 500


class UserError(ChildguardError, ValueError):
    """Bad input from a user or client."""

    exit_code = 2
    http_status = 422


class InvalidContent(UserError):
    """Content that cannot be classified as given (bad text, bad image)."""

    http_status = 422


class ContentTooLarge(InvalidContent):
    http_status = 413


class UnsupportedMedia(InvalidContent):
    http_status = 415


class NotFound(UserError):
    http_status = 404


class Forbidden(UserError):
    """The caller may not do this (a role or four-eyes rule); says who may."""

    http_status = 403


class DependencyError(ChildguardError, RuntimeError):
    """A dependency (model weights, database, Label Studio, judge server) is unavailable."""

    exit_code = 3
    http_status = 503


class ModelUnavailable(DependencyError):
    """A model cannot be loaded or its weights are missing."""
