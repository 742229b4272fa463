"""childguard.evaluation."""
