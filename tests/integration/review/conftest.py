"""Fixtures for the review-bridge integration tests (implementations in review_support.py)."""

from review_support import label_studio, review_env  # noqa: F401  (pytest fixtures)
