"""``fit``/``validate``/``test``/``predict``: Lightning's CLI over neurotorch's configs.

``--config`` takes a file or the name of a built-in config (`neurotorch.cli.configs`). A mistake
in the configuration (an unknown key, a value of the wrong type, a choice that does not exist, a
value a class refuses, an evaluation without ``--ckpt_path``) is one ``error:`` line naming the
key, the value and what is accepted, with exit status 2, before any data is read.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import re
import typing
from collections.abc import Sequence
from typing import Any

from neurotorch._options import check_option
from neurotorch.cli.arguments import UsageError
from neurotorch.cli.configs import builtin_configs, resolve_config
from neurotorch.errors import ParameterError

SUBCOMMANDS = ("fit", "validate", "test", "predict")
CONFIG_FLAGS = ("--config", "-c")
HELP_FLAGS = ("-h", "--help", "--print_config")
CLASS_KEYS = ("--model", "--data")
# lines of jsonargparse's nested error report that say where, not what
STRUCTURAL_LINES = (
    "Parser key",
    "Does not validate",
    "Subtypes:",
    "Errors:",
    "Given value",
    "Expected a <class 'NoneType'>",
    "Problem with given class_path",
)


def with_resolved_configs(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``--config NAME`` replaced by the file it names."""
    out = list(argv)
    for k, arg in enumerate(out):
        if arg in CONFIG_FLAGS and k + 1 < len(out):
            out[k + 1] = resolve_config(out[k + 1])
        elif arg.startswith("--config="):
            out[k] = "--config=" + resolve_config(arg.partition("=")[2])
    return out


def _choice_message(key: str, value: str, literal: str) -> str:
    """The `check_option` message for a value outside ``typing.Literal[...]``."""
    try:
        choices = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return f"{key}: {value!r} is not one of {literal}"
    try:
        check_option(key, ast.literal_eval(value) if value[:1] in "'\"" else value, choices)
    except ParameterError as err:
        return str(err).rstrip(".")
    return f"{key}={value!r} is not accepted"


def _class_message(key: str, name: str) -> str:
    """An unknown class for ``--model`` or ``--data``, with neurotorch's classes of that kind."""
    from neurotorch import lightning as datamodules
    from neurotorch import models

    package = models if key == "--model" else datamodules
    names = [n for n in package.__all__ if n != "PredictionWriter"]
    try:
        check_option(key, name.rsplit(".", 1)[-1], names)  # an import path by its class name
    except ParameterError as err:
        accepted = str(err).partition("; ")[2].rstrip(".")
        return (
            f"{key}: no class {name!r} (neither a neurotorch class nor an import path); {accepted}"
        )
    return f"{key}: {name!r} is not a {'model' if key == '--model' else 'DataModule'}"


def _parameter_message(
    key: str, option: str, class_path: str | None, nested: Sequence[str] = ()
) -> str:
    """An unknown ``init_args`` key, with the parameters the class accepts (for a key inside a
    settings parameter, ``--data.init_args.voxels.rio``: the fields of those settings)."""
    owner = class_path.rsplit(".", 1)[-1] if class_path else "the class"
    names = _parameters(class_path) if class_path else []
    if class_path and nested:
        settings = _settings_class(class_path, list(nested))
        if settings is not None:
            owner, names = settings.__name__, [f.name for f in dataclasses.fields(settings)]
    if not names:
        return f"{key}: {owner} has no parameter {option!r}"
    try:
        check_option("parameter", option, names)
    except ParameterError as err:
        accepted = str(err).partition("; ")[2].rstrip(".")
        return f"{key}: {owner} has no parameter {option!r}; {accepted}"
    return f"{key}: {owner} does not take {option!r} here"


def _settings_class(class_path: str, nested: list[str]) -> type | None:
    """The settings dataclass a parameter path below a class takes (``voxels`` of the fMRI
    DataModule: `VoxelSelection`), if it is one."""
    owner: Any = _imported(class_path)
    for parameter in nested:
        try:
            hints = typing.get_type_hints(owner.__init__)
        except (NameError, TypeError):
            return None
        hint = hints.get(parameter)
        options = typing.get_args(hint) or (hint,)
        owner = next((t for t in options if dataclasses.is_dataclass(t)), None)
        if owner is None:
            return None
    return owner


def _imported(class_path: str) -> Any | None:
    """The object at the import path ``class_path``, or ``None``."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _parameters(class_path: str) -> list[str]:
    """The constructor parameters of the class at ``class_path`` (none if it cannot be found)."""
    cls: Any = _imported(class_path)
    try:
        signature = inspect.signature(cls.__init__)
    except (ValueError, TypeError):
        return []
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [n for n, p in signature.parameters.items() if n != "self" and p.kind not in kinds]


def one_line(message: str) -> str:
    """jsonargparse's nested error report as one line: the key, the value, what is accepted."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    class_path = re.search(r"Problem with given class_path '([^']+)'", message)
    owner = class_path.group(1) if class_path else None
    if keys and owner:
        key = f"--{keys[0]}.init_args" + "".join(f".{k}" for k in keys[1:])
    else:
        key = "--" + ".".join(keys) if keys else ""
    if owner and keys and f"--{keys[0]}" in CLASS_KEYS and _imported(owner) is None:
        return _class_message(f"--{keys[0]}", owner)  # a class_path in a config file
    literal = re.search(r"Expected a typing\.Literal(\[.*?\])\. Got value: (.*)", message)
    if literal:
        return _choice_message(key, literal.group(2).strip(), literal.group(1))
    unknown = re.search(r"Option '([^']+)' is not accepted", message) or re.search(
        r'No action for key "([^"]+)"', message
    )
    if unknown:
        nested = keys[1:] if keys and owner else []
        return _parameter_message(f"{key}.{unknown.group(1)}", unknown.group(1), owner, nested)
    unknown_class = re.search(r"Expected a dot import path string: (\S+)", message)
    if unknown_class and key in CLASS_KEYS:
        return _class_message(key, unknown_class.group(1))
    expected = re.search(r"Expected a <class '([^']+)'>", message)
    given = re.search(r"(?:Got value|Given value): (.*)", message)
    if expected and given:
        return f"{key}: expected {expected.group(1)}, got {given.group(1).strip()!r}"
    lines = [line.strip(" -") for line in message.splitlines()]
    meaningful = [line for line in lines if line and not line.startswith(STRUCTURAL_LINES)]
    detail = meaningful[0] if meaningful else lines[0]
    return f"{key}: {detail}" if key and key not in detail else detail


def run(argv: Sequence[str]) -> int:
    """Run LightningCLI with ``class_path``/``init_args`` configs for model and data."""
    command, arguments = argv[0], list(argv[1:])
    wants_help = any(
        arg in HELP_FLAGS
        or arg.startswith("--print_config")
        or arg.partition("=")[0].endswith(".help")
        for arg in arguments
    )
    has_config = any(arg in CONFIG_FLAGS or arg.startswith("--config=") for arg in arguments)
    if not (has_config or wants_help or "--model" in arguments):
        raise UsageError(
            f"{command} needs a config: neurotorch {command} --config NAME_OR_FILE (built-in: "
            f"{', '.join(builtin_configs())})"
        )
    resolved = with_resolved_configs(arguments)  # a config name mistyped: said before importing
    from neurotorch.lightning.cli import NeurotorchLightningCLI  # Lightning (seconds)

    try:
        NeurotorchLightningCLI(
            args=[command, *resolved],
            parser_kwargs={"exit_on_error": False, "prog": "neurotorch"},
        )
    except argparse.ArgumentError as err:
        message = one_line(str(err)).rstrip(".")
        raise UsageError(f"{message} (see 'neurotorch {command} --help')") from err
    return 0
