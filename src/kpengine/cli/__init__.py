"""The ``kpengine`` command: a thin layer over the library, one module per group of commands."""
