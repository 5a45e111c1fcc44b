"""Render-set views as image samples: the files decoded by :mod:`kpengine.io.renderset`, typed here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kpengine.image.types import ImageSample, Keypoints2D
from kpengine.io.renderset import MAPS, RenderSet
from kpengine.render.cameras import Camera, Viewpoint


def view_sample(render_set: RenderSet, i: int, maps: Sequence[str] = MAPS) -> ImageSample:
    """View ``i`` of ``render_set`` as an :class:`ImageSample` (image, camera, 2D keypoints, viewpoint, center and
    the maps asked for among ``mask``, ``depth``, ``normals``)."""
    d = render_set.read_view(i, maps)
    v = d["view"]
    return ImageSample(
        d["image"],
        mask=d["mask"],
        camera=Camera.from_json(v["camera"]),
        keypoints=Keypoints2D.from_json(v["keypoints"]),
        depth=d["depth"],
        normals=d["normals"],
        viewpoint=Viewpoint(v["azimuth"], v["elevation"], v["distance"], v["theta"]),
        center=np.asarray(v["center"], np.float64) if v.get("center") is not None else None,
        name=v["id"],
        model_id=v["model_id"],
        category=v["category"],
    )
