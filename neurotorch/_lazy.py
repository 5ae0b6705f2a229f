"""The one lazy-import mechanism of the package.

* `lazy_exports` gives a package a module-level ``__getattr__``/``__dir__`` that import a name's
  module on first access: ``import neurotorch.lightning`` stays fast, and asking for the fMRI
  classes never imports MNE.
* `import_object` resolves a ``"module:attribute"`` string, for the name → implementation tables
  (datasets by name, synthetic writers by family) that must not import every family up front.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], eager: Mapping[str, Any] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` of a package whose names live in submodules.

    Parameters
    ----------
    package
        The package's ``__name__``.
    exports
        Name → module path (``"neurotorch.fmri.subject"``) that defines it.
    eager
        Names the package already imported itself (listed in ``__all__`` too).
    """
    names = sorted({*exports, *(eager or {})})

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names


def import_object(target: str) -> Any:
    """The object named by ``"package.module:attribute"``."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
