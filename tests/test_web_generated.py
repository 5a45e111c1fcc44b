"""The web pages and the Python code share one palette and one set of API types (issue 10c)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from kpengine.render.overlay import draw_keypoints
from kpengine.server.typescript import api_types_ts, generated_files
from kpengine.viz.palette import PALETTE, semantic_rgb, semantic_rgba

WEB_SRC = Path(__file__).resolve().parents[1] / "web" / "src"


def _web_palette() -> list[tuple[int, int, int]]:
    text = (WEB_SRC / "generated" / "palette.ts").read_text()
    values = re.search(r"PALETTE: readonly number\[\] = \[([^\]]*)\]", text).group(1)
    return [((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in (int(x, 16) for x in values.split(","))]


@pytest.mark.parametrize("rel", sorted(generated_files()))
def test_checked_in_generated_files_match_the_code(rel):
    """Fails after a change to kpengine.server.schemas or the palette: run `python scripts/gen_web.py`."""
    assert (WEB_SRC / rel).read_text() == generated_files()[rel], f"web/src/{rel} is stale: run scripts/gen_web.py"


def test_web_and_png_colours_agree():
    ids = np.array([0, 1, 7, 19, 20, 33, 45])
    web = _web_palette()
    assert len(web) == 20
    tab20 = matplotlib.colormaps["tab20"]
    for sid in ids.tolist():
        # matplotlib figures (viz, aggregate plots) and the web
        np.testing.assert_array_equal(semantic_rgba(np.array([sid]))[0], tab20(sid % 20))
        assert tuple(round(255 * c) for c in tab20(sid % 20)[:3]) == web[sid % 20]
    # a Pillow overlay PNG: the pixel under a visible keypoint's dot is the web's colour
    image = np.full((40, 40 * len(ids), 3), 255, np.uint8)
    uv = np.stack([20 + 40 * np.arange(len(ids)), np.full(len(ids), 20)], axis=1).astype(float)
    drawn = draw_keypoints(image, uv, ids, radius=5, names={int(s): "" for s in ids})
    for k, sid in enumerate(ids.tolist()):
        assert tuple(drawn[20, 20 + 40 * k].tolist()) == web[sid % 20]
    np.testing.assert_array_equal(semantic_rgb(ids), [PALETTE[s % 20] for s in ids.tolist()])


def test_pages_declare_no_api_type_or_palette_of_their_own():
    for path in WEB_SRC.glob("*.ts"):
        text = path.read_text()
        for name in ("ModelRow", "ModelInfo", "CategoryOut", "AnnotationOut", "MeOut", "NextModelOut", "PointCloudOut"):
            assert not re.search(rf"\b(interface|type)\s+{name}\b", text), f"{path.name} declares {name} again"
        assert not re.search(r"\[\s*(0x[0-9a-fA-F]{6}\s*,\s*){4,}", text), f"{path.name} has its own palette"
    common = (WEB_SRC / "common.ts").read_text()
    assert 'import { PALETTE } from "./generated/palette";' in common and "PALETTE[" in common


def test_types_follow_the_schema():
    """Independent of the checked-in file: a small schema gives the TypeScript a reader expects."""
    schema = {
        "components": {
            "schemas": {
                "Row": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "split": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                        "xyz": {"type": "array", "prefixItems": [{"type": "number"}] * 3},
                        "tags": {"type": "array", "items": {"$ref": "#/components/schemas/Tag"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "role": {"enum": ["admin", "annotator"]},
                    },
                    "required": ["id", "split", "xyz"],
                },
                "Tag": {"type": "string"},
            }
        }
    }
    text = api_types_ts(schema)
    assert "export interface Row {\n  id: number;\n  split: string | null;\n  xyz: [number, number, number];\n" in text
    assert '  tags?: Tag[];\n  labels?: Record<string, string>;\n  role?: "admin" | "annotator";\n}' in text
    assert "export type Tag = string;" in text
