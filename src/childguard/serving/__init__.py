"""childguard.serving."""
