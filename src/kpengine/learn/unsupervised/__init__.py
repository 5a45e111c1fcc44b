"""Unsupervised keypoint detectors (networks trained without keypoint labels)."""
