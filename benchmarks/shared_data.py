"""Where the benchmarks find ``shared/data``: ``$KPENGINE_SHARED_DATA``, else the folder beside the repository.

The defaults used to be ``../shared/data/...`` relative to the working folder, which only held when a
script was started from the repository root; the tests resolve the same path (tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

_BESIDE_REPO = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_DATA = Path(os.environ.get("KPENGINE_SHARED_DATA", _BESIDE_REPO))


def shared_data(*parts: str) -> str:
    """The path of ``shared/data/<parts...>`` as a string (argparse defaults are strings)."""
    return str(SHARED_DATA.joinpath(*parts))
