"""Figures: shapes with keypoints, metric curves."""
