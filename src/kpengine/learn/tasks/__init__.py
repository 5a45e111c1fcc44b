"""The point tasks, one module each, registered in :data:`kpengine.learn.registry.TASKS`.

A module ``NAME.py`` here is the task ``NAME``: the first line of its docstring is its help in
``kpengine train --help``, and it registers a :class:`~kpengine.learn.pointtask.PointTask`
subclass with ``@TASKS.register("NAME")``.
"""
