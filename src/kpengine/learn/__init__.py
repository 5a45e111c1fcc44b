"""Learning from keypoint-annotated shapes: baselines, point backbones, tasks and training."""
