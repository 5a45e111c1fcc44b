"""Cameras, rendering, projection with visibility, differentiable silhouettes and the 2D benchmark.

The coordinate convention is stated once, in :mod:`kpengine.render.cameras`.
"""
