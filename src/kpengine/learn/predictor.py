"""One predictor interface, as scikit-learn's estimators: ``fit(shapes)`` then ``predict(shapes)``.

``fit`` learns what the predictor needs from annotated shapes (a template's mean positions,
a saliency network's decision threshold and radius on validation shapes, an embedding's
prototypes on training shapes) and returns the predictor; ``predict`` gives the predictions
of a list of shapes in the format ``kpengine evaluate`` reads for the task ``evaluates_as``:

* saliency: ``{model_id: [[point_index, score], ...]}``, best first;
* correspondence: ``{model_id: {semantic_id (str): point_index}}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from kpengine.data.shape import Shape


class Predictor(ABC):
    #: "saliency" or "correspondence": the ``kpengine evaluate --task`` its predictions are for
    evaluates_as: ClassVar[str]

    def fit(self, shapes: Sequence[Shape]) -> Self:
        """Learn from annotated ``shapes`` (nothing to learn by default); returns self."""
        return self

    @abstractmethod
    def predict(self, shapes: Sequence[Shape]) -> dict[str, Any]: ...
