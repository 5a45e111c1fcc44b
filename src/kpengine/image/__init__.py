"""From photos to pixel-level semantics (paper §4): image data types, training renders, and networks."""
