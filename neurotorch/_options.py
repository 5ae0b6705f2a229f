"""The one validator of arguments: choices, integers, numbers in a range, lists of names.

Every public function checks its arguments here, once, at the boundary, and every refusal is a
`ParameterError` that names the argument, the value given and what is accepted (MNE's
``_check_option`` is the model). A string where a list of names is expected is one name, never
a sequence of characters (`as_names`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np

from neurotorch.errors import ParameterError

T = TypeVar("T")
S = TypeVar("S")


def check_option(name: str, value: T, allowed: Iterable[Any], *, hint: str = "") -> T:
    """``value`` if it is one of ``allowed``, else `ParameterError` listing the choices."""
    choices = tuple(allowed)
    try:
        known = value in choices
    except TypeError:  # an unhashable value against a set-like: not a choice either
        known = False
    if not known:
        listed = ", ".join(repr(c) for c in choices)
        close = _closest(value, choices)
        raise ParameterError(
            f"{name}={value!r} is not accepted; choose one of {listed}"
            + (f" (did you mean {close!r}?)" if close is not None else "")
            + (f". {hint}" if hint else ".")
        )
    return value


def _closest(value: Any, choices: Sequence[Any]) -> Any:
    """The choice a mistyped string most likely meant, or None."""
    if not isinstance(value, str):
        return None
    import difflib

    texts = {str(c): c for c in choices if isinstance(c, str)}
    found = difflib.get_close_matches(value, list(texts), n=1, cutoff=0.6)
    return texts[found[0]] if found else None


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int``: an integer (numpy integers too), not a bool, not a float.

    A count or an index is an integer; ``2.7`` (or ``3.0``) is refused rather than rounded.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    _check_range(name, value, minimum=minimum, maximum=maximum)
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    open_minimum: bool = False,
    open_maximum: bool = False,
) -> float:
    """``value`` as a finite ``float`` within the given bounds (closed unless ``open_*``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}.")
    too_low = minimum is not None and (value <= minimum if open_minimum else value < minimum)
    too_high = maximum is not None and (value >= maximum if open_maximum else value > maximum)
    if too_low or too_high:
        low = "" if minimum is None else ("(" if open_minimum else "[") + f"{minimum:g}"
        high = "" if maximum is None else f"{maximum:g}" + (")" if open_maximum else "]")
        raise ParameterError(
            f"{name} must lie in {low or '(-inf'}, {high or 'inf)'}; got {value!r}."
        )
    return value


def _check_range(name: str, value: int, minimum: int | None, maximum: int | None) -> None:
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name} must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ParameterError(f"{name} must be at most {maximum}, got {value}.")


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy bools too), else `ParameterError`."""
    if not isinstance(value, bool | np.bool_):
        raise ParameterError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def as_names(name: str, value: str | Iterable[str], *, allow_empty: bool = False) -> list[str]:
    """One name or several as a list of strings: a string is one name, never its characters.

    Raises `ParameterError` for items that are not strings and (unless ``allow_empty``) for an
    empty list.
    """
    if isinstance(value, str):
        names = [value]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        names = list(value)
    else:
        raise ParameterError(
            f"{name} must be a name or a list of names, got {value!r} ({type(value).__name__})."
        )
    wrong = [item for item in names if not isinstance(item, str)]
    if wrong:
        raise ParameterError(f"{name} must hold names (strings); {wrong[:3]!r} are not.")
    if not names and not allow_empty:
        raise ParameterError(f"{name} is empty; give at least one name.")
    return names


def as_ints(name: str, value: Any, *, minimum: int | None = None) -> list[int]:
    """One integer or several as a list of ``int`` (each checked by `check_int`)."""
    values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    if not values:
        raise ParameterError(f"{name} is empty; give at least one integer.")
    return [check_int(f"{name}[{k}]", v, minimum=minimum) for k, v in enumerate(values)]


def as_settings(cls: type[S], value: S | Mapping[str, Any] | None, name: str) -> S:
    """``value`` as a ``cls`` settings object: itself, built from a dict of its fields, or the
    defaults for None; anything else (or an unknown key) is a `ParameterError`."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in value:
            check_option(f"a key of {name}", key, known)
        return cls(**value)
    raise ParameterError(
        f"{name} must be a {cls.__name__} or a dict of its fields, got {value!r} "
        f"({type(value).__name__})."
    )
