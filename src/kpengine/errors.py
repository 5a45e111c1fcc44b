"""Errors and warnings that name the file, model or field at fault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Input data is malformed or inconsistent; the message says where and why."""

    def __init__(self, message: str, *, path: str | Path | None = None, model_id: str | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if model_id is not None:
            where.append(f"model {model_id}")
        self.path = None if path is None else str(path)
        self.model_id = model_id
        self.reason = message
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class Problem:
    """One model that could not be used (or was used with a caveat), and why.

    Datasets collect these instead of dropping models silently, so that users see which
    models are missing from a statistic or a metric.
    """

    model_id: str
    reason: str
    path: str | None = None
    fatal: bool = True

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        kind = "skipped" if self.fatal else "warning"
        return f"{kind}: model {self.model_id}{where}: {self.reason}"
