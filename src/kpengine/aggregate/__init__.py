"""Crowd-click aggregation (KeypointNet §3.4): raw clicks -> consistent semantic keypoints.

Data flow (one module per step, see ``docs/aggregation.md``)::

    raw.py       RAW.json clicks, validated -> ClickSet
    crowd.py     simulated annotators from ground-truth keypoints (for evaluation)
    saliency.py  each click a Gaussian (sigma 0.03) on the surface
    embedding.py per-point 128-d embedding learned from annotator-index classes
    fidelity.py  fidelity error map (eq. 4), smoothing, non-minimum suppression
    cluster.py   t-SNE + DBSCAN of candidate embeddings -> semantic ids / noise
    symmetry.py  reflection pairs and rotation groups in the official schema
    baselines.py Dutagaci-style geodesic clustering; DBSCAN on click positions
    evaluate.py  recall / precision, ARI / purity, classes and symmetries vs ground truth
    pipeline.py  ties the steps together, with progress bars and a report
"""
