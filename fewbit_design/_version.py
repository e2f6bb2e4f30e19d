"""The package version (every step stamps it into what it writes)."""

__version__ = "0.1.0"
