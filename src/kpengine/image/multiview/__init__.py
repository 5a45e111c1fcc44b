"""MvDeCor (Sharma et al., ECCV 2022) on KeypointNet shapes: multi-view renders with per-pixel
correspondence, dense contrastive pretraining of a 2D U-Net, few-shot region labelling and
back-projection onto the 2,048-point cloud (docs/mvdecor.md).

Modules: ``views`` (render and cache the views), ``correspond`` (matched pixels of two views),
``unet`` (the network and its inputs), ``regions`` (per-pixel targets), ``backproject``
(votes onto the cloud, keypoints from the votes), ``transfer`` (the nearest-embedding figure).
"""
