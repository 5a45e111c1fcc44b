"""The 16 KeypointNet categories: names, WordNet synsets, and lookup by either."""

from __future__ import annotations

from dataclasses import dataclass

from kpengine.errors import DataError

#: WordNet synset offset of each ShapeNetCore category KeypointNet annotates.
SYNSETS: dict[str, str] = {
    "airplane": "02691156",
    "bathtub": "02808440",
    "bed": "02818832",
    "bottle": "02876657",
    "cap": "02954340",
    "car": "02958343",
    "chair": "03001627",
    "guitar": "03467517",
    "helmet": "03513137",
    "knife": "03624134",
    "laptop": "03642806",
    "motorcycle": "03790512",
    "mug": "03797390",
    "skateboard": "04225987",
    "table": "04379243",
    "vessel": "04530566",
}
NAMES: dict[str, str] = {synset: name for name, synset in SYNSETS.items()}


@dataclass(frozen=True)
class Category:
    """A category known both by its human name and its WordNet synset id."""

    name: str
    synset: str


def register_category(name: str, synset: str) -> Category:
    """Make a category outside KeypointNet known (e.g. kpengine's sample data).

    Synsets of user categories are free-form strings; they only have to be unique.
    """
    if name in SYNSETS and SYNSETS[name] != synset:
        raise DataError(f"category {name!r} is already registered with synset {SYNSETS[name]}")
    if synset in NAMES and NAMES[synset] != name:
        raise DataError(f"synset {synset!r} is already registered as {NAMES[synset]!r}")
    SYNSETS[name] = synset
    NAMES[synset] = name
    return Category(name, synset)


def resolve_category(name_or_synset: str) -> Category:
    """Look a category up by name (``"chair"``) or synset (``"03001627"``).

    Raises ``DataError`` listing the known categories when neither matches.
    """
    key = name_or_synset.strip().lower()
    if key in SYNSETS:
        return Category(key, SYNSETS[key])
    if key in NAMES:
        return Category(NAMES[key], key)
    known = ", ".join(f"{n} ({s})" for n, s in sorted(SYNSETS.items()))
    raise DataError(f"unknown category {name_or_synset!r}; known categories: {known}")
