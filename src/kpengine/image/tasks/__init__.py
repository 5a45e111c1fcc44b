"""The image tasks of ``kpengine train`` (one module per task, registered in :data:`kpengine.learn.registry.TASKS`)."""
