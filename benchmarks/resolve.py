"""Resolve one (benchmark, method, dataset, profile, seed) into a full LightningCLI-style config.

Precedence, later wins: trainer defaults < spec ``trainer`` < method < method.datasets[D] <
profile < profile.methods[M] < profile.methods[M].datasets[D] < hardware flags < ``--set``.
A stage is overridden with ``--set stages.NAME.model.init_args.K=V`` (or ``stages.NAME.trainer.K=V``):
it applies to every selected method that has a stage NAME, and changes that stage's cache key.

The resolved config has the keys LightningCLI reads (``seed_everything``, ``trainer``, ``model``,
``data``) plus a ``litbench`` section naming the run and its stages. The config hash covers all of
it except where the data live (``data.init_args.data_dir`` / ``cache_dir``): moving a dataset does
not change a result, but changing any hyper-parameter, dataset name, profile or device does.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from benchmarks.spec import BenchmarkSpec, Override, SpecError
from leaderboard.records import config_hash, make_run_id

# Trainer arguments every run gets unless a spec or flag says otherwise.
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "strategy": "auto",
    "num_nodes": 1,
    "precision": "32-true",
    "max_epochs": 1,
    "deterministic": False,
}
LOCATION_KEYS = ("data_dir", "cache_dir")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """``trainer.max_epochs=5`` -> (["trainer", "max_epochs"], 5); the value is parsed as YAML."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment!r}: expected key.path=value, e.g. --set trainer.max_epochs=5")
    key, _, text = assignment.partition("=")
    parts = [part for part in key.strip().split(".") if part]
    if not parts:
        raise SpecError(f"--set {assignment!r}: empty key path")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return parts, value


def is_stage_set(assignment: str) -> bool:
    return assignment.strip().startswith("stages.")


EVALUATION_SPLITS = ("test", "val")


def apply_set(config: dict[str, Any], assignment: str) -> bool:
    """Apply one ``--set``; False when it names a stage this run does not have (so a multi-method
    selection can override the stage some of its methods share)."""
    parts, value = parse_set(assignment)
    if parts[0] == "stages":
        if len(parts) < 4 or parts[2] not in ("model", "trainer"):
            raise SpecError(f"--set {assignment!r}: a stage override reads stages.NAME.model.init_args.KEY=VALUE "
                            "or stages.NAME.trainer.KEY=VALUE")
        stage = next((s for s in config["litbench"]["stages"] if s["name"] == parts[1]), None)
        if stage is None:
            return False
        _assign(stage, parts[2:], value, assignment)
        return True
    if parts[0] not in ("trainer", "model", "data", "seed_everything"):
        raise SpecError(f"--set {assignment!r}: the key must start with trainer., model., data., stages. or seed_everything")
    _assign(config, parts, value, assignment)
    return True


def _assign(config: dict[str, Any], parts: list[str], value: Any, assignment: str) -> None:
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {assignment!r}: {part!r} is not a mapping in the resolved config")
        node = child
    node[parts[-1]] = value


@dataclass
class RunPlan:
    """One planned run: its id, resolved config and hash."""

    run_id: str
    config: dict[str, Any]
    config_hash: str
    benchmark: str
    method: str
    dataset: str
    profile: str
    seed: int
    unmatched_stage_sets: list[str] = field(default_factory=list)


def _layer(override: Override | None, dataset: str) -> list[Override]:
    if override is None:
        return []
    return [override] + ([override.datasets[dataset]] if dataset in override.datasets else [])


def identity_of(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines the result (locations stripped)."""
    identity = copy.deepcopy(config)
    data_args = identity.get("data", {}).get("init_args", {})
    for key in LOCATION_KEYS:
        data_args.pop(key, None)
    return identity


def resolve_run(spec: BenchmarkSpec, *, method: str, dataset: str, profile: str, seed: int,
                hardware: dict[str, Any] | None = None, sets: list[str] | tuple[str, ...] = (),
                data_dir: str | None = None, cache_dir: str | None = None, evaluate_on: str = "test") -> RunPlan:
    """One run's resolved config. ``evaluate_on="val"`` (calibration sweeps only) scores the trained
    model on the datamodule's validation split instead of its test split."""
    if evaluate_on not in EVALUATION_SPLITS:
        raise SpecError(f"evaluate_on must be one of {', '.join(EVALUATION_SPLITS)}, got {evaluate_on!r}")
    if method not in spec.methods:
        raise SpecError(f"benchmark {spec.name!r} has no method {method!r} (it has: {', '.join(spec.methods)})")
    if profile not in spec.profiles:
        raise SpecError(f"benchmark {spec.name!r} has no profile {profile!r} (it has: {', '.join(spec.profiles)})")
    method_spec = spec.methods[method]
    profile_spec = spec.profiles[profile]
    profile_method = profile_spec.methods.get(method)
    method_as_override = Override(init_args=method_spec.init_args, trainer=method_spec.trainer,
                                  datasets=method_spec.datasets)
    layers = _layer(method_as_override, dataset) + [Override(trainer=profile_spec.trainer)] + _layer(profile_method, dataset)

    trainer = deep_merge(TRAINER_DEFAULTS, spec.trainer)
    init_args: dict[str, Any] = {}
    for layer in layers:
        trainer = deep_merge(trainer, layer.trainer)
        init_args = deep_merge(init_args, layer.init_args)
    hardware = dict(hardware or {})
    # torch.compile is a run option (the profile's `compile`, or `--compile`), not a Trainer argument
    compile_model = hardware.pop("compile", None) or profile_spec.compile
    trainer = deep_merge(trainer, {k: v for k, v in hardware.items() if v is not None})

    data_args = deep_merge(spec.data.init_args, profile_spec.data_init_args)
    data_args["dataset"] = dataset
    if data_dir is not None:
        data_args["data_dir"] = str(data_dir)
    if cache_dir is not None:
        data_args["cache_dir"] = str(cache_dir)

    stages = []
    for stage in method_spec.stages:
        stage_trainer = deep_merge(deep_merge(deep_merge(TRAINER_DEFAULTS, spec.trainer), profile_spec.trainer), stage.trainer)
        stage_args = copy.deepcopy(stage.init_args)
        if profile_method is not None and stage.name in profile_method.stages:
            stage_trainer = deep_merge(stage_trainer, profile_method.stages[stage.name].trainer)
            stage_args = deep_merge(stage_args, profile_method.stages[stage.name].init_args)
        stage_trainer = deep_merge(stage_trainer, {k: v for k, v in (hardware or {}).items() if v is not None})
        stage_seed = stage.seed if stage.seed is not None else (seed if stage.per_seed else 0)
        stages.append({"name": stage.name, "pass_as": stage.pass_as, "seed": stage_seed,
                       "model": {"class_path": stage.class_path, "init_args": stage_args},
                       "trainer": stage_trainer, **({"compile": True} if compile_model else {})})

    config: dict[str, Any] = {
        "seed_everything": seed,
        "trainer": trainer,
        "model": {"class_path": method_spec.class_path, "init_args": init_args},
        "data": {"class_path": spec.data.class_path, "init_args": data_args},
        "litbench": {"benchmark": spec.name, "method": method, "role": method_spec.role, "dataset": dataset,
                     "profile": profile, "seed": seed, "stages": stages},
    }
    if compile_model:  # absent unless asked for, so other runs' config hashes stay what they were
        config["litbench"]["compile"] = True
    if evaluate_on != "test":  # absent for test runs, so their config hashes stay what they were
        config["litbench"]["evaluate_on"] = evaluate_on
    unmatched_stage_sets = [assignment for assignment in sets if not apply_set(config, assignment)]
    return RunPlan(run_id=make_run_id(spec.name, dataset, method, profile, seed), config=config,
                   config_hash=config_hash(identity_of(config)), benchmark=spec.name, method=method,
                   dataset=dataset, profile=profile, seed=seed, unmatched_stage_sets=unmatched_stage_sets)


def check_stage_sets(plans: list[RunPlan], sets: list[str] | tuple[str, ...]) -> None:
    """A stage ``--set`` that no selected run uses is a typo, not a no-op."""
    for assignment in filter(is_stage_set, sets):
        if plans and all(assignment in plan.unmatched_stage_sets for plan in plans):
            names = sorted({stage["name"] for plan in plans for stage in plan.config["litbench"]["stages"]})
            raise SpecError(f"--set {assignment!r}: no selected method has that stage "
                            f"(stages: {', '.join(names) or 'none'}); `litbench list` shows the methods")


def stage_config(run_config: dict[str, Any], stage: dict[str, Any]) -> dict[str, Any]:
    """The config a stage artifact depends on: the stage itself, the data it trains on, and the
    source of the code that trains it (``source_fingerprint`` of its model and data classes): a
    stage cached by older code would otherwise feed new runs and sweeps as if it were current."""
    # `compile` only when set, so the cache keys of eager stages stay what they were
    return {"name": stage["name"], "seed": stage["seed"], "model": stage["model"], "trainer": stage["trainer"],
            "data": identity_of({"data": run_config["data"]})["data"],
            "code": source_fingerprint(stage["model"]["class_path"], run_config["data"]["class_path"]),
            **({"compile": True} if stage.get("compile") else {})}


@lru_cache(maxsize=None)
def source_fingerprint(*class_paths: str) -> str:
    """A hash of the source files that define these classes: for each, the package or module named
    by its first two dotted parts (``modules.cmt`` -> every ``.py`` under ``modules/cmt/``;
    ``datamodules.synthetic_scenes`` -> that file). Helpers imported from elsewhere are not in it."""
    digest = hashlib.sha256()
    for path in sorted({file for class_path in class_paths for file in _source_files(class_path)}):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _source_files(class_path: str) -> list[Path]:
    parts = class_path.split(".")[:-1]  # the module path, without the class name
    try:
        spec = importlib.util.find_spec(".".join(parts[:2]))
    except (ImportError, ValueError):  # an unimportable class is reported by the config check
        spec = None
    if spec is None:
        return []
    if spec.submodule_search_locations:  # a package: all of its source
        return [file for folder in spec.submodule_search_locations for file in Path(folder).rglob("*.py")]
    return [Path(spec.origin)] if spec.origin and spec.origin.endswith(".py") else []
