"""childguard: classify text and images against child-safety policies, end to end."""

__version__ = "0.1.0"
