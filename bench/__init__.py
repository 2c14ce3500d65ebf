"""The project's benchmarks: developer tools that measure the product (the library never imports them).

``kodak`` is the main benchmark (``python bench/kodak.py`` or ``assr-eic bench`` from a source checkout),
built from ``classical`` (the classical codecs at a byte budget, cached), ``ours`` (our files and the bicubic
ablation), ``speed`` (fresh-process speed and memory) and ``report`` (curves, BD-rates, the quality goal,
plots and the Markdown summary). The other files here are stand-alone scripts.
"""
