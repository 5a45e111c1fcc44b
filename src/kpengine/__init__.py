"""kpengine: a 3D keypoint knowledge engine.

The package is organised along the flow of data:

``io`` (file formats) -> ``data`` (datasets, sample data) -> ``geometry`` (sampling,
geodesics) -> ``metrics`` (the KeypointNet benchmark) -> ``viz`` (figures), with ``cli``
a thin layer over all of them. Later stages (learning, aggregation, rendering, the
store and the server) live in their own sub-packages and only import downwards.
"""

__version__ = "0.1.0"
