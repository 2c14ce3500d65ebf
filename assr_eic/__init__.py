"""assr-eic: variable-rate extreme image compression with arbitrary-scale super-resolution decoding."""

__version__ = "0.1.0"
