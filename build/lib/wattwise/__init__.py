"""wattwise: train with fewer joules, and measure them."""

__version__ = "0.1.0"
