"""Shape retrieval by a joint shape-image embedding (Li, Su et al., "Joint Embeddings of Shapes and
Images via CNN Image Purification", SIGGRAPH Asia 2015), used by ``kpengine retrieve`` and, by
option, ``kpengine understand``.

* :mod:`.lightfield`: each shape drawn from a fixed set of viewpoints (shaded, OpenGL), a HoG
  descriptor per view, the shape-to-shape distance (sum over corresponding views).
* :mod:`.sammon`: Sammon's stress and its gradient, classical MDS: the distance matrix becomes
  a 128-d shape space (the ``shape-embedding`` task optimises it).
* :mod:`.retrieve`: a photo crop regressed into that space by the ``image-embedding`` CNN,
  knowledge-base shapes ranked by distance; the HoG nearest-neighbour baseline.

docs/understanding.md, "Shape retrieval", says where this departs from the paper and why.
"""
