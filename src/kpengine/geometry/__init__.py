"""Geometry on point clouds and meshes: sampling, nearest points, geodesic distances."""
