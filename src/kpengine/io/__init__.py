"""File formats: one module per format, each with a ``load_*``/``save_*`` pair."""
