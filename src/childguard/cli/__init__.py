"""childguard.cli."""
