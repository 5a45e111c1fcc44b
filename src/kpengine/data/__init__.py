"""Datasets of keypoint-annotated shapes, and kpengine's generated sample data."""

from kpengine.data.dataset import KeypointNetDataset, load_shape_cloud
from kpengine.data.shape import Shape

__all__ = ["KeypointNetDataset", "Shape", "load_shape_cloud"]
