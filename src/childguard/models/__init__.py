"""childguard.models."""
