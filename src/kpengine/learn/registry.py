"""Registries of named parts (backbones, tasks): one module per entry, listed without importing it.

A registry reads its entries from packages: every public module ``pkg/NAME.py`` is the entry
``NAME``, and the first line of its docstring is the entry's one-line help. Listing names and
help therefore parses a few small files and imports nothing, so ``kpengine --help`` can show
the choices without loading torch. :meth:`Registry.get` imports the module on first use; the
module registers its object with the :meth:`Registry.register` decorator. Adding a backbone or
a task is one new file in a registered package; a package above ``learn`` (``kpengine.image``)
adds its own package of entries with :meth:`Registry.add_package`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, one module per name in the packages added."""

    def __init__(self, what: str, packages: tuple[str, ...] = ()):
        self.what = what
        self._packages: list[str] = []
        self._objects: dict[str, T] = {}
        for package in packages:
            self.add_package(package)

    def add_package(self, package: str) -> None:
        """Read entries from ``package``'s modules too (idempotent)."""
        if package not in self._packages:
            self._packages.append(package)

    def _modules(self, only: str | None = None) -> dict[str, tuple[str, Path]]:
        """name -> (module path, source file) over the packages (or package ``only``), first first."""
        found: dict[str, tuple[str, Path]] = {}
        for package in self._packages:
            if only is not None and package != only:
                continue
            try:
                spec = importlib.util.find_spec(package)
            except ModuleNotFoundError:  # a registered package that is not installed here
                continue
            if spec is None or not spec.submodule_search_locations:
                continue
            for mod in pkgutil.iter_modules(spec.submodule_search_locations):
                if mod.name.startswith("_") or mod.ispkg or mod.name in found:
                    continue
                found[mod.name] = (f"{package}.{mod.name}", Path(mod.module_finder.path) / f"{mod.name}.py")
        return found

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: the module's object for entry ``name``."""

        def wrap(obj: T) -> T:
            self._objects[name] = obj
            return obj

        return wrap

    def names(self, package: str | None = None) -> list[str]:
        """Entry names, sorted; ``package``: only the modules of that package."""
        if package is not None:
            return sorted(self._modules(package))
        return sorted(set(self._modules()) | set(self._objects))

    def summary(self, name: str) -> str:
        """First line of the entry's module docstring (read, not imported)."""
        mods = self._modules()
        if name not in mods:
            obj = self._objects.get(name)
            return ((obj.__doc__ if obj is not None else "") or "").strip().split("\n")[0]
        doc = ast.get_docstring(ast.parse(mods[name][1].read_text(encoding="utf-8"))) or ""
        return doc.strip().split("\n")[0]

    def help(self, indent: str = "  ") -> str:
        """One line per entry, for argparse descriptions."""
        names = self.names()
        width = max((len(n) for n in names), default=0) + 2
        return "\n".join(f"{indent}{n:<{width}}{self.summary(n)}" for n in names)

    def get(self, name: str) -> T:
        """The entry's object, importing its module on first use; ValueError naming the choices."""
        if name not in self._objects:
            mods = self._modules()
            if name not in mods:
                raise ValueError(f"unknown {self.what} {name!r}; choose one of {', '.join(self.names())}")
            importlib.import_module(mods[name][0])
            if name not in self._objects:
                raise ValueError(f"module {mods[name][0]} does not register a {self.what} named {name!r}")
        return self._objects[name]


#: point backbones (kpengine.learn.backbones.*), each a PointBackbone subclass
BACKBONES: Registry = Registry("backbone", ("kpengine.learn.backbones",))
#: trainable tasks (kpengine.learn.tasks.*; kpengine.image adds its own), each a runs.Task subclass
TASKS: Registry = Registry("task", ("kpengine.learn.tasks",))
