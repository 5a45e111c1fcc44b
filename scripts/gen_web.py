"""Regenerate web/src/generated/ (API types from /openapi.json, the semantic palette) from the Python code.

Run after changing a request/response model in kpengine.server.schemas or the palette in
kpengine.viz.palette; tests/test_web_generated.py fails until you do.

    python scripts/gen_web.py
"""

from __future__ import annotations

from pathlib import Path

from kpengine.server.typescript import write_generated

if __name__ == "__main__":
    changed = write_generated(Path(__file__).resolve().parents[1] / "web" / "src")
    print("\n".join(f"wrote {p}" for p in changed) or "web/src/generated is up to date")
