"""fewbit-design: optimal piecewise-constant derivative tables for few-bit backward."""

__version__ = "0.1.0"
