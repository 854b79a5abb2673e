"""Configuration: the options (every one declared in speedrun/options.py) resolved to plain values.

This module turns the registered sections into a nested dict of plain values, from defaults, a
YAML/JSON `--config-file` and the command line, and stops with a clear message (exit status 2) on an
unknown option or a bad value. Library callers skip the command line: `defaults()` then
`merge(config, overrides)`.
"""
import argparse
import copy
import sys

import fastargs.config
from fastargs import get_current_config
from fastargs.exceptions import MissingValueError
from terminaltables import AsciiTable

from .options import Boolean, Choice, Number  # noqa: F401 (registers every option)

# fastargs draws its --help tables with terminal line-drawing codes, which print as garbage once piped
# to a file or a pager; plain ASCII reads the same everywhere.
fastargs.config.SingleTable = AsciiTable


def defaults():
    """The nested dict of every registered parameter's default."""
    config = get_current_config()
    result = {}
    for path, param in config.entries.items():
        _set(result, path, copy.deepcopy(param.default))
    return result


def merge(base, overrides, strict=True):
    """A copy of `base` with the nested dict `overrides` laid over it; unknown keys are an error
    unless `strict` is False (for laying values over a partial config)."""
    result = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if strict and key not in result:
            raise KeyError(f"unknown config key {key!r}; known: {', '.join(sorted(result))}")
        if isinstance(result.get(key), dict) and isinstance(value, dict):
            result[key] = merge(result[key], value, strict)
        else:
            result[key] = value
    return result


def parse_args(argv=None, description=None, aliases=None, explicit_only=False):
    """Resolve every registered section from defaults, --config-file and `argv` (default sys.argv[1:]).

    `aliases` maps short flags to full ones, e.g. {"--epochs": "--training.epochs"}. With
    `explicit_only`, the result holds only what the file and command line set (validated), so a
    caller can lay it over other defaults, such as a recipe's.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    for short, full in (aliases or {}).items():
        argv = [full if a == short else full + a[len(short):] if a.startswith(short + "=") else a
                for a in argv]
    config = get_current_config()
    config.content.clear()
    parser = argparse.ArgumentParser(description=description)
    saved, sys.argv = sys.argv, [sys.argv[0]] + argv
    try:
        config.augment_argparse(parser)
        config.collect_argparse_args(parser)
    finally:
        sys.argv = saved
    errors = []
    result = {}
    for path, param in config.entries.items():
        if explicit_only and config.content.get(path) is None:
            continue
        try:
            _set(result, path, config[path])
        except MissingValueError:
            errors.append(f"--{'.'.join(path)} is required")
        except Exception:
            got = config.content.get(path)
            errors.append(f"--{'.'.join(path)}: expected {param.checker.help()}, got {got!r}")
    if errors:
        parser.error("invalid configuration:\n  " + "\n  ".join(errors))
    return result


def parse_seeds(text):
    """'0,1,2' -> [0, 1, 2]; '0-4' -> [0, 1, 2, 3, 4]; '0-2,7' -> [0, 1, 2, 7]."""
    seeds = []
    for part in text.replace(" ", "").split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"bad seeds {text!r}: expected e.g. '0,1,2' or '0-4'")
        seeds += range(int(low), int(high) + 1) if dash else [int(low)]
    return seeds


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
