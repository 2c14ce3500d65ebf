"""Base codecs for the low-resolution image: ``av1`` (raw AV1) and ``learned`` (variable-rate hyperprior)."""
