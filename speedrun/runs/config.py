"""Configuration: the options (declared in speedrun/runs/options.py) resolved to plain values, and resume.

A run's config is a nested dict of plain values built once, in this order: every option's default,
the values of the optimizer it uses and the recipe's values (speedrun/runs/recipes.py), then a YAML/JSON
`--config-file` and the command line. It is not changed afterwards; what a run derives from it (the
LR the range test picks, the peak epoch of a short run) is recorded beside it. A bad option stops with
a clear message (exit status 2).
Library callers skip the command line: `resolve_config(overrides)`.
"""

import argparse
import copy
import sys

import fastargs.config
from fastargs import get_current_config
from fastargs.exceptions import MissingValueError
from terminaltables import AsciiTable

from speedrun.runs.options import RUN_SECTIONS, Boolean, Choice, Number  # noqa: F401 (registers every option)
from speedrun.runs.recipes import OPTIMIZER_DEFAULTS, recipe_config
from speedrun.system import checkpoint, runlog

# fastargs draws its --help tables with terminal line-drawing codes, which print as garbage once piped
# to a file or a pager; plain ASCII reads the same everywhere.
fastargs.config.SingleTable = AsciiTable


POLICY_KEYS = ("device", "compile", "compile_mode", "compile_cache", "precision", "channels_last")  # how, not what
RESUME_MAY_CHANGE = ("logging", "training.resume", *(f"training.{key}" for key in POLICY_KEYS))


def defaults(sections=None):
    """The nested dict of every registered option's default (of those in `sections`, if given)."""
    result = {}
    for path, param in _registry(sections).entries.items():
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


def parse_args(argv=None, description=None, aliases=None, explicit_only=False, sections=None, extra=()):
    """Resolve the registered options (those of `sections`, if given) from defaults, --config-file and
    `argv` (default sys.argv[1:]).

    `aliases` maps short flags to full ones, e.g. {"--epochs": "--training.epochs"}. With
    `explicit_only`, the result holds only what the file and command line set (validated), so a
    caller can lay it over other defaults, such as a recipe's. `extra` are (flag, help) pairs of plain
    switches, returned under the key "switches" as {name: bool}.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    for short, full in (aliases or {}).items():
        argv = [full if a == short else full + a[len(short) :] if a.startswith(short + "=") else a for a in argv]
    switches = {flag.lstrip("-").replace("-", "_"): flag in argv for flag, _ in extra}
    argv = [a for a in argv if a not in {flag for flag, _ in extra}]
    config = _registry(sections)
    config.content.clear()
    parser = argparse.ArgumentParser(description=description)
    for flag, text in extra:
        parser.add_argument(flag, action="store_true", help=text)
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
    if extra:
        result["switches"] = switches
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


def resolve_config(overrides=None):
    """A run's config: the defaults of the run's sections, then the values of the optimizer it uses, the
    recipe's values, and `overrides` (a nested dict; an unknown key is a KeyError)."""
    overrides = overrides or {}
    given, options = overrides.get("training", {}), defaults(RUN_SECTIONS)
    recipe = recipe_config(given.get("recipe", "seed"))
    optimizer = given.get("optimizer", recipe.get("training", {}).get("optimizer", options["training"]["optimizer"]))
    return merge(merge(merge(options, OPTIMIZER_DEFAULTS.get(optimizer, {})), recipe), overrides)


def run_config(overrides=None):
    """The config a run uses, complete and final, and the checkpoint state it resumes from (None for a
    new run): resolved from `overrides`, or the saved config of the run `training.resume` names."""
    overrides = overrides or {}
    resume = overrides.get("training", {}).get("resume", "")
    config, state = resume_config(resume, overrides) if resume else (resolve_config(overrides), None)
    if not config["logging"]["folder"]:
        config = merge(config, {"logging": {"folder": runlog.default_folder()}})
    return config, state


def config_differences(saved, given, prefix=""):
    """Dotted keys whose value in `given` differs from `saved` (keys absent from `given` do not count)."""
    differ = []
    for key, value in given.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            differ += config_differences(saved.get(key, {}), value, name + ".")
        elif not name.startswith(RESUME_MAY_CHANGE) and saved.get(key) != value:
            differ.append(f"{name}: run has {saved.get(key)!r}, given {value!r}")
    return differ


def resume_config(folder, overrides):
    """The saved config of the run in `folder` and its checkpoint state, refusing overrides that would
    change the run; the logging options and the device policy may change."""
    state = checkpoint.load_checkpoint(checkpoint.find_checkpoint(folder))
    differ = config_differences(state["config"], overrides)
    if differ:
        raise ValueError(f"{folder} was run with another config; differing keys:\n  " + "\n  ".join(differ))
    saved = merge(defaults(RUN_SECTIONS), state["config"], strict=False)  # options newer than the checkpoint: defaults
    given = overrides.get("training", {})
    policy = {key: given.get(key, saved["training"][key]) for key in POLICY_KEYS}
    config = merge(
        saved,
        {"logging": {**overrides.get("logging", {}), "folder": folder}, "training": {**policy, "resume": folder}},
        strict=False,
    )
    return config, state


def _registry(sections=None):
    """The fastargs registry, or a view of it holding only `sections`."""
    registry = get_current_config()
    if sections is None:
        return registry
    view = fastargs.config.Config()
    for name in sections:
        namespace = (name,)
        view.add_section(registry.sections[namespace])
        for path in registry.sections_to_entries[namespace]:
            view.add_entry(namespace, ".".join(path[1:]), registry.entries[path])
    return view


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
