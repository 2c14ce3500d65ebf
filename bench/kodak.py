"""The Kodak benchmark (see ``assr_eic/bench.py``; also ``assr-eic bench``).

.venv/bin/python bench/kodak.py --out bench/results [--model F] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from assr_eic.bench import main
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from assr_eic.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
