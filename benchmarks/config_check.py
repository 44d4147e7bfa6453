"""Check resolved run configs against the signatures they will be called with, before any run.

A typo (``--set model.init_args.hiden=64``) or a wrong type (``--set trainer.max_epochs=ten``) is
bad input: one line naming the key, the class and the fix, exit 2, nothing run and no record,
instead of N failed runs. jsonargparse (the parser LightningCLI uses) validates each
``class_path`` + ``init_args`` and the ``trainer`` block against ``lightning.pytorch.Trainer``.
Arguments that a stage injects at run time (``pass_as``) are not in the config yet, so a missing
required argument is left to the constructor.
"""

from __future__ import annotations

import difflib
import inspect
import re
from functools import lru_cache
from typing import Any

from benchmarks.errors import UsageError

TRAINER_CLASS_PATH = "lightning.pytorch.Trainer"


def _import_class(class_path: str) -> type:
    module_name, _, class_name = class_path.rpartition(".")
    module = __import__(module_name, fromlist=[class_name])
    return getattr(module, class_name)


@lru_cache(maxsize=None)
def _parser_for(class_path: str):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(_import_class(class_path), fail_untyped=False)
    for action in parser._actions:  # noqa: SLF001 - argparse's documented Action list
        action.required = False  # injected arguments (pass_as) arrive at run time
    return parser


def _accepted_names(class_path: str) -> list[str] | None:
    """Keyword names the class accepts, or None when it takes **kwargs (anything goes)."""
    parameters = inspect.signature(_import_class(class_path)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def _expected_types(detail: str) -> str:
    types = re.findall(r"Expected a <class '([\w.]+)'>", detail)
    return " or ".join(dict.fromkeys(t.replace("NoneType", "null") for t in types)) or detail.splitlines()[-1].strip()


def init_args_problem(class_path: str, init_args: dict[str, Any], *, where: str) -> str | None:
    """One line on what is wrong with ``init_args`` for ``class_path`` (None when it fits)."""
    short = class_path.rpartition(".")[2]
    try:
        accepted = _accepted_names(class_path)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        return f"{where}: cannot import {class_path} ({exc}); check the class_path"
    if accepted is not None:
        for key in init_args:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(accepted)}"
                return f"{where}: {short} has no argument {key!r}; {hint}"
    from jsonargparse import ArgumentError

    try:
        _parser_for(class_path).parse_object(dict(init_args))
    except ArgumentError as exc:
        detail = str(exc)
        key = re.search(r'Parser key "([^"]+)"', detail)
        if key is None:
            return f"{where}: {short} rejects its arguments: {detail.splitlines()[0]}"
        name = key.group(1).split(".")[0]
        return (f"{where}: {short} argument {name!r} = {init_args.get(name)!r} has the wrong type; "
                f"expected {_expected_types(detail)}")
    return None


def _blocks(config: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(where, class_path, init_args) of every class a run will build, stages included."""
    blocks = []
    for prefix, part in [("", config), *((f"stages.{s['name']}.", s) for s in config.get("litbench", {}).get("stages", []))]:
        for key in ("model", "data"):
            if isinstance(part.get(key), dict) and part[key].get("class_path"):
                blocks.append((f"{prefix}{key}", part[key]["class_path"], part[key].get("init_args") or {}))
        if isinstance(part.get("trainer"), dict):
            blocks.append((f"{prefix}trainer", TRAINER_CLASS_PATH, part["trainer"]))
    return blocks


def _effective_arg(cls: type, init_args: dict[str, Any], key: str) -> Any:
    """``init_args[key]``, else the default of the nearest ``__init__`` in the MRO that names it
    (``CMTFromStage(**config)`` passes its arguments on to ``CMT``); ``inspect._empty`` if none does."""
    if key in init_args:
        return init_args[key]
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            parameter = inspect.signature(klass.__init__).parameters.get(key)
            if parameter is not None and parameter.default is not inspect.Parameter.empty:
                return parameter.default
    return inspect.Parameter.empty


def _comparable(value: Any) -> Any:
    return tuple(_comparable(item) for item in value) if isinstance(value, (list, tuple)) else value


def stage_architecture_problems(config: dict[str, Any]) -> list[str]:
    """A method that loads a stage's checkpoint declares the arguments both must be built with
    (``stage_shared_args`` on its class); it checks them when it loads, i.e. after the stage trained.
    A value that differs (a sweep or ``--set`` of the stage's key alone) is caught here, before."""
    model = config.get("model") or {}
    if not model.get("class_path"):
        return []
    method_class = _import_class(model["class_path"])
    shared = getattr(method_class, "stage_shared_args", ())
    problems = []
    for stage in config.get("litbench", {}).get("stages", []) if shared else []:
        stage_model = stage.get("model") or {}
        if not stage_model.get("class_path"):
            continue
        stage_class = _import_class(stage_model["class_path"])
        for key in shared:
            mine = _effective_arg(method_class, model.get("init_args") or {}, key)
            theirs = _effective_arg(stage_class, stage_model.get("init_args") or {}, key)
            if inspect.Parameter.empty in (mine, theirs) or _comparable(mine) == _comparable(theirs):
                continue
            name = stage["name"]
            problems.append(f"stages.{name}.model.init_args.{key} is {theirs!r} but model.init_args.{key} is {mine!r}, and "
                            f"{method_class.__name__} loads that stage's checkpoint only if they are equal: set both "
                            f"(--set stages.{name}.model.init_args.{key}=V --set model.init_args.{key}=V, or one "
                            "--param each in a sweep)")
    return problems


def config_problems(config: dict[str, Any]) -> list[str]:
    """Every block of one resolved run config that would not construct, one line each, then every
    argument a method and the stage it loads disagree on."""
    problems = []
    for where, class_path, init_args in _blocks(config):
        label = f"{where}.init_args" if where.endswith(("model", "data")) else where
        problem = init_args_problem(class_path, init_args, where=label)
        if problem:
            problems.append(problem)
    return problems or stage_architecture_problems(config)


def check_configs(plans: list[Any]) -> None:
    """Raise one UsageError line (exit 2) for the first config that would not construct."""
    checked: set[str] = set()
    for plan in plans:
        if plan.config_hash in checked:
            continue
        checked.add(plan.config_hash)
        problems = config_problems(plan.config)
        if problems:
            raise UsageError(f"{plan.benchmark}/{plan.method} ({plan.dataset}): {problems[0]}; nothing was run")
