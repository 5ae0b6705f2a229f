"""Messages of the library: the ``neurotorch`` logger and its one verbosity switch.

Every module logs through ``logging.getLogger(__name__)``, a child of the ``neurotorch`` logger,
never with ``print``. Messages are written to standard error (as ``message`` for INFO,
``warning: message`` from WARNING up) at level INFO unless the environment variable
``NEUROTORCH_LOG_LEVEL`` or `set_log_level` says otherwise. The ``neurotorch`` logger does not
pass its records on to the root logger, so a ``logging.basicConfig`` in user code does not print
them twice; to handle them yourself, remove its handler and set ``propagate = True``.

Results worth reading (where a report, a figure, a checkpoint or predictions were written, the
test line of a model) go to the ``neurotorch.results`` logger instead: it writes plain lines to
standard output and keeps its own level, so ``NEUROTORCH_LOG_LEVEL=WARNING`` quiets the messages
and keeps the results (``logging.getLogger("neurotorch.results").setLevel("WARNING")`` hides
them too).

Warnings that ask the caller to change something stay Python warnings (``warnings.warn``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from neurotorch.errors import ConfigError

LOGGER_NAME = "neurotorch"
RESULTS_LOGGER_NAME = "neurotorch.results"
LEVEL_VARIABLE = "NEUROTORCH_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

logger = logging.getLogger(LOGGER_NAME)
results = logging.getLogger(RESULTS_LOGGER_NAME)


class _CurrentStream(logging.StreamHandler):
    """Writes to ``sys.stderr`` (or ``sys.stdout``) as it is at each message: pytest and
    notebooks replace them."""

    def __init__(self, which: str = "stderr"):
        self.which = which
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self.which)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the property wins
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def parse_level(level: int | str) -> int:
    """A `logging` level from a number or a name such as ``"info"``; `ConfigError` otherwise."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    text = str(level).strip()
    if text.isdigit():
        return int(text)
    if text.upper() in LEVELS:
        return logging.getLevelName(text.upper())
    raise ConfigError(
        f"Unknown log level {level!r}; use one of {', '.join(LEVELS)} (any case) or a number."
    )


def set_log_level(level: int | str | None = None) -> int:
    """Set how much neurotorch reports, and return the previous level.

    Parameters
    ----------
    level
        ``"DEBUG"``, ``"INFO"`` (the default), ``"WARNING"``, ``"ERROR"``, ``"CRITICAL"`` (any
        case) or a `logging` number. ``None`` reads ``NEUROTORCH_LOG_LEVEL`` (INFO when unset).

    Raises
    ------
    ConfigError
        ``level`` (or the environment variable) names no level.
    """
    if level is None:
        level = os.environ.get(LEVEL_VARIABLE) or "INFO"
    previous = logger.level
    logger.setLevel(parse_level(level))
    return previous


def _install() -> None:
    if not any(isinstance(h, _CurrentStream) for h in logger.handlers):
        handler = _CurrentStream("stderr")
        handler.setFormatter(_Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
    if not any(isinstance(h, _CurrentStream) for h in results.handlers):
        results.addHandler(_CurrentStream("stdout"))
    results.propagate = False
    results.setLevel(logging.INFO)
    try:
        set_log_level()
    except ConfigError as err:  # importing must not fail on a typo in the environment
        logger.setLevel(logging.INFO)
        warnings.warn(f"{LEVEL_VARIABLE}: {err} Using INFO.", stacklevel=3)


_install()
