"""Single-view 3D reconstruction (paper §4.2, after MarrNet / ShapeHD): RGB -> 2.5D sketches ->
voxels in the canonical frame -> mesh; the pipeline's second shape route besides retrieval.

Modules: ``data`` (ground-truth voxels of a category, sketches from render sets), ``nets``
(sketch, voxel and naturalness networks and their losses), ``reconstruct`` (a photo to a mesh).
"""
