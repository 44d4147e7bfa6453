"""Benchmark specs: YAML files loaded and validated into dataclasses (suites: ``benchmarks.suite_spec``).

A spec (``benchmarks/specs/<paper>.yaml``) declares one benchmark::

    name: dcagc
    paper: {title: ..., venue: ..., code: owner/repo, arxiv: "2206.07897"}
    task: attributed graph clustering
    data: {class_path: datamodules.graphs.AttributedGraphDataModule, init_args: {}, datasets: [Cora]}
    trainer: {max_epochs: 400}                    # base Trainer arguments (optional)
    methods:
      dcagc:
        role: proposed                            # proposed | baseline | ablation
        class_path: modules.dcagc.DCAGC
        init_args: {hidden: 512}
        trainer: {}                               # per-method Trainer arguments (optional)
        datasets: {CiteSeer: {init_args: {hidden: 1024}, trainer: {max_epochs: 150}}}
        stages: [{name: teacher, class_path: ..., init_args: {}, trainer: {}, pass_as: teacher_ckpt}]
    metrics: {primary: acc, higher_is_better: {acc: true}}
    claims:                                       # judged by leaderboard.claims (its docstring: the rule)
      - {id: beats-kmeans, text: ..., metric: acc, method: dcagc, baseline: kmeans_features,
         margin: 0.0, relative: false, min_effect: 0.05, note: "why it may not reproduce at cpu scale"}
    gates:                                        # did the arms learn? (leaderboard.gates: the kinds)
      - {id: above-one-cluster, metric: acc, reference_metric: majority_share, why: ...}
    paper_results: {Cora: {dcagc: {acc: 0.70}}}
    profiles:
      smoke: {seeds: 1, trainer: {max_epochs: 2}, data: {datasets: [sbm-synthetic]},
              methods: {dcagc: {init_args: {hidden: 16}}}}
      cpu: {include_methods: [dcagc, kmeans_features]}   # a profile may run a subset of the methods

A profile may also set ``workers: N``: the number of independent runs executed in parallel
processes when ``litbench run`` gets no ``--workers`` (each gets cpu_count / N threads). It is for
profiles of small models, where N one-thread processes finish a suite much sooner than one process
with N threads (measured for TinyMIM in its spec). ``compile: true`` trains and tests every run of
the profile, its cached stages included, under ``torch.compile`` (as ``litbench run --compile`` does
for one invocation): for small conv nets on CPU, where the eager step is dominated by per-op
overhead, it buys steps with speed without changing the method.

Every mapping is checked against its allowed keys: an unknown key is an error naming the file and
the key path (a typo in a spec must never be silently ignored).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leaderboard.gates import MalformedGateError, parse_gate

# $LITBENCH_SPECS_DIR (and $LITBENCH_SUITES_DIR, see suite_spec) point the harness at other spec folders (tests use a
# toy benchmark this way; users can keep private benchmarks outside the package).
SPECS_DIR = Path(__file__).parent / "specs"
# "reference": a fixed point of comparison that is neither a method nor a baseline it claims to beat
# (the human test set, a random or repeat generator); it is shown, never the "best baseline".
ROLES = ("proposed", "baseline", "ablation", "reference")
PROFILES = ("smoke", "cpu", "full")


class SpecError(ValueError):
    """A spec or suite file that is malformed; the message is one line naming file and key."""


# --------------------------------------------------------------------------------------------
# Dataclasses


@dataclass
class Override:
    """Init-arg and Trainer overrides, optionally per dataset."""

    init_args: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, "Override"] = field(default_factory=dict)
    stages: dict[str, "Override"] = field(default_factory=dict)


@dataclass
class StageSpec:
    """A cached prerequisite of a method (pretrain a teacher, distil a dataset, ...)."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    pass_as: str = ""
    seed: int | None = None  # None: one artifact shared by every seed; an int fixes the stage seed
    per_seed: bool = False  # True: one artifact per run seed


@dataclass
class MethodSpec:
    name: str
    role: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, Override] = field(default_factory=dict)
    stages: list[StageSpec] = field(default_factory=list)
    description: str = ""


@dataclass
class DataSpec:
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)


@dataclass
class ClaimSpec:
    id: str
    text: str
    metric: str
    method: str
    baseline: str
    datasets: list[str] = field(default_factory=list)
    margin: float = 0.0
    relative: bool = False  # margin and min_effect are fractions of the baseline's value
    min_effect: float | None = None  # the smallest improvement the paper's claim implies
    note: str = ""  # why the claim may not reproduce at a scaled profile; shown beside the verdict


@dataclass
class ProfileSpec:
    name: str
    seeds: int = 3
    trainer: dict[str, Any] = field(default_factory=dict)
    data_init_args: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] | None = None
    methods: dict[str, Override] = field(default_factory=dict)
    include_methods: list[str] | None = None  # the methods this profile runs (None: all); --methods wins
    workers: int = 1  # parallel run processes when --workers is not given
    compile: bool = False  # every run and stage of the profile under torch.compile


@dataclass
class BenchmarkSpec:
    name: str
    path: Path
    paper: dict[str, Any]
    task: str
    data: DataSpec
    methods: dict[str, MethodSpec]
    primary_metric: str
    higher_is_better: dict[str, bool]
    claims: list[ClaimSpec]
    paper_results: dict[str, Any]
    profiles: dict[str, ProfileSpec]
    trainer: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)  # validity gates, see leaderboard.gates
    median_metrics: list[str] = field(default_factory=list)  # shown with their median over seeds too

    def datasets_for(self, profile: str) -> list[str]:
        chosen = self.profiles[profile].datasets
        return list(chosen) if chosen is not None else list(self.data.datasets)

    def snapshot(self) -> dict[str, Any]:
        """What the leaderboard needs to know about this benchmark, as plain data."""
        return {
            "paper": copy.deepcopy(self.paper),
            "task": self.task,
            "metrics": {"primary": self.primary_metric, "higher_is_better": dict(self.higher_is_better),
                        "median": list(self.median_metrics)},
            "claims": [_claim_snapshot(claim) for claim in self.claims],
            "gates": copy.deepcopy(self.gates),
            "paper_results": copy.deepcopy(self.paper_results),
            "roles": {name: method.role for name, method in self.methods.items()},
        }


def _claim_snapshot(claim: ClaimSpec) -> dict[str, Any]:
    # Optional keys at their defaults are left out (an empty datasets list means "every dataset"),
    # so a snapshot reads like the spec that was written.
    defaults = {"datasets": [], "relative": False, "min_effect": None, "note": ""}
    return {key: value for key, value in vars(claim).items() if key not in defaults or value != defaults[key]}


# --------------------------------------------------------------------------------------------
# Validation helpers


def _mapping(value: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(value))
    if missing:
        raise SpecError(f"{where}: missing required key {missing[0]!r}")
    return value


def _free_mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise SpecError(f"{where}: expected a list of strings, got {value!r}")
    return list(value)


def _class_path(value: Any, where: str) -> str:
    text = _string(value, where)
    if "." not in text:
        raise SpecError(f"{where}: class_path {text!r} must be a dotted path like 'modules.dcagc.DCAGC'")
    return text


def _override(value: Any, where: str, *, nested: bool = True) -> Override:
    allowed = {"init_args", "trainer"} | ({"datasets", "stages"} if nested else set())
    raw = _mapping(value, where, allowed)
    nested_blocks: dict[str, dict[str, Override]] = {"datasets": {}, "stages": {}}
    for key, blocks in nested_blocks.items():
        for name, block in _free_mapping(raw.get(key), f"{where}.{key}").items():
            blocks[str(name)] = _override(block, f"{where}.{key}.{name}", nested=False)
    return Override(init_args=_free_mapping(raw.get("init_args"), f"{where}.init_args"),
                    trainer=_free_mapping(raw.get("trainer"), f"{where}.trainer"), **nested_blocks)


def _stage(value: Any, where: str) -> StageSpec:
    raw = _mapping(value, where, {"name", "class_path", "init_args", "trainer", "pass_as", "seed", "per_seed"},
                   {"name", "class_path", "pass_as"})
    seed = raw.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise SpecError(f"{where}.seed: expected an integer, got {seed!r}")
    return StageSpec(name=_string(raw["name"], f"{where}.name"), class_path=_class_path(raw["class_path"], f"{where}.class_path"),
                     init_args=_free_mapping(raw.get("init_args"), f"{where}.init_args"),
                     trainer=_free_mapping(raw.get("trainer"), f"{where}.trainer"),
                     pass_as=_string(raw["pass_as"], f"{where}.pass_as"), seed=seed,
                     per_seed=bool(raw.get("per_seed", False)))


def _method(name: str, value: Any, where: str) -> MethodSpec:
    raw = _mapping(value, where, {"role", "class_path", "init_args", "trainer", "datasets", "stages", "description"},
                   {"role", "class_path"})
    role = raw["role"]
    if role not in ROLES:
        raise SpecError(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
    override = _override({k: raw[k] for k in ("init_args", "trainer", "datasets") if k in raw}, where)
    stages_raw = raw.get("stages") or []
    if not isinstance(stages_raw, list):
        raise SpecError(f"{where}.stages: expected a list of stages")
    stages = [_stage(stage, f"{where}.stages[{index}]") for index, stage in enumerate(stages_raw)]
    return MethodSpec(name=name, role=role, class_path=_class_path(raw["class_path"], f"{where}.class_path"),
                      init_args=override.init_args, trainer=override.trainer, datasets=override.datasets,
                      stages=stages, description=str(raw.get("description", "")))


def _profile(name: str, value: Any, where: str, method_names: set[str]) -> ProfileSpec:
    raw = _mapping(value, where, {"seeds", "trainer", "data", "methods", "include_methods", "workers", "compile"})
    seeds, workers = raw.get("seeds", 3), raw.get("workers", 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise SpecError(f"{where}.seeds: expected a positive integer, got {seeds!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise SpecError(f"{where}.workers: expected a positive integer, got {workers!r}")
    if not isinstance(raw.get("compile", False), bool):
        raise SpecError(f"{where}.compile: expected true or false, got {raw['compile']!r}")
    data = _mapping(raw.get("data"), f"{where}.data", {"datasets", "init_args"})
    methods = {}
    for method, block in _free_mapping(raw.get("methods"), f"{where}.methods").items():
        if method not in method_names:
            raise SpecError(f"{where}.methods: unknown method {method!r} (spec has: {', '.join(sorted(method_names))})")
        methods[method] = _override(block, f"{where}.methods.{method}")
    include = None
    if "include_methods" in raw:
        include = _string_list(raw["include_methods"], f"{where}.include_methods")
        unknown = [m for m in include if m not in method_names]
        if unknown or not include:
            raise SpecError(f"{where}.include_methods: unknown method {unknown[0]!r}" if unknown
                            else f"{where}.include_methods: name at least one method")
    return ProfileSpec(include_methods=include, name=name, seeds=seeds, trainer=_free_mapping(raw.get("trainer"), f"{where}.trainer"),
                       data_init_args=_free_mapping(data.get("init_args"), f"{where}.data.init_args"),
                       datasets=_string_list(data["datasets"], f"{where}.data.datasets") if "datasets" in data else None,
                       methods=methods, workers=workers, compile=raw.get("compile", False))


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML{position}: {problem}") from None


# --------------------------------------------------------------------------------------------
# Public loaders


def load_spec(path: str | Path) -> BenchmarkSpec:
    path = Path(path)
    raw = _mapping(_read_yaml(path), str(path),
                   {"name", "paper", "task", "data", "trainer", "methods", "metrics", "claims", "gates", "paper_results",
                    "profiles"},
                   {"name", "data", "methods", "metrics", "profiles"})
    where = str(path)
    name = _string(raw["name"], f"{where}: name")
    data_raw = _mapping(raw["data"], f"{where}: data", {"class_path", "init_args", "datasets"}, {"class_path", "datasets"})
    data = DataSpec(class_path=_class_path(data_raw["class_path"], f"{where}: data.class_path"),
                    init_args=_free_mapping(data_raw.get("init_args"), f"{where}: data.init_args"),
                    datasets=_string_list(data_raw["datasets"], f"{where}: data.datasets"))
    methods_raw = _free_mapping(raw["methods"], f"{where}: methods")
    if not methods_raw:
        raise SpecError(f"{where}: methods: at least one method is required")
    methods = {str(m): _method(str(m), block, f"{where}: methods.{m}") for m, block in methods_raw.items()}
    metrics = _mapping(raw["metrics"], f"{where}: metrics", {"primary", "higher_is_better", "median"},
                       {"primary", "higher_is_better"})
    directions = _free_mapping(metrics["higher_is_better"], f"{where}: metrics.higher_is_better")
    if not all(isinstance(v, bool) for v in directions.values()):
        raise SpecError(f"{where}: metrics.higher_is_better: every value must be true or false")
    primary = _string(metrics["primary"], f"{where}: metrics.primary")
    if primary not in directions:
        raise SpecError(f"{where}: metrics.primary {primary!r} has no entry in metrics.higher_is_better")
    # The paper's own statistic, where it reports the median over random splits (PMT-IQA).
    median_metrics = _string_list(metrics.get("median") or [], f"{where}: metrics.median")
    unknown = [name for name in median_metrics if name not in directions]
    if unknown:
        raise SpecError(f"{where}: metrics.median: {unknown[0]!r} has no entry in metrics.higher_is_better")
    claims = []
    claims_raw = raw.get("claims") or []
    if not isinstance(claims_raw, list):
        raise SpecError(f"{where}: claims: expected a list of claims, got {type(claims_raw).__name__}")
    for index, claim_raw in enumerate(claims_raw):
        at = f"{where}: claims[{index}]"
        claim = _mapping(claim_raw, at, {"id", "text", "metric", "method", "baseline", "datasets", "margin",
                                         "relative", "min_effect", "note"},
                         {"id", "metric", "method", "baseline"})
        for key in ("metric", "method", "baseline"):
            claim[key] = _string(claim[key], f"{at}.{key}")
        for key in ("method", "baseline"):
            if claim[key] not in methods:
                raise SpecError(f"{at}.{key}: unknown method {claim[key]!r}")
        if claim["metric"] not in directions:
            raise SpecError(f"{at}.metric: {claim['metric']!r} has no entry in metrics.higher_is_better")
        margin = claim.get("margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise SpecError(f"{at}.margin: expected a number, got {margin!r}")
        min_effect = claim.get("min_effect")
        if min_effect is not None and (isinstance(min_effect, bool) or not isinstance(min_effect, (int, float))
                                       or not math.isfinite(min_effect) or min_effect < 0):
            raise SpecError(f"{at}.min_effect: expected a number >= 0 (an improvement in the metric's units), got {min_effect!r}")
        if not isinstance(claim.get("relative", False), bool):
            raise SpecError(f"{at}.relative: expected true or false, got {claim['relative']!r}")
        claims.append(ClaimSpec(id=_string(claim["id"], f"{at}.id"), text=str(claim.get("text", "")),
                                metric=claim["metric"], method=claim["method"], baseline=claim["baseline"],
                                datasets=_string_list(claim.get("datasets"), f"{at}.datasets"), margin=float(margin),
                                relative=bool(claim.get("relative", False)),
                                min_effect=None if min_effect is None else float(min_effect),
                                note=str(claim.get("note") or "")))
    gates = _gates(raw.get("gates"), where, directions=directions, methods=methods)
    profiles_raw = _free_mapping(raw["profiles"], f"{where}: profiles")
    profiles = {}
    for profile_name, block in profiles_raw.items():
        if profile_name not in PROFILES:
            raise SpecError(f"{where}: profiles: unknown profile {profile_name!r} (allowed: {', '.join(PROFILES)})")
        profiles[profile_name] = _profile(profile_name, block, f"{where}: profiles.{profile_name}", set(methods))
    return BenchmarkSpec(name=name, path=path, paper=_free_mapping(raw.get("paper"), f"{where}: paper"),
                         task=str(raw.get("task", "")), data=data, methods=methods, primary_metric=primary,
                         higher_is_better=directions, median_metrics=median_metrics, claims=claims,
                         paper_results=_free_mapping(raw.get("paper_results"), f"{where}: paper_results"),
                         profiles=profiles, trainer=_free_mapping(raw.get("trainer"), f"{where}: trainer"),
                         gates=gates)


def _gates(value: Any, where: str, *, directions: dict[str, bool], methods: dict[str, MethodSpec]) -> list[dict[str, Any]]:
    """The spec's validity gates, checked by the leaderboard's own parser so both agree on the format."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{where}: gates: expected a list of gates, got {type(value).__name__}")
    ids = set()
    for index, gate in enumerate(value):
        try:
            parsed = parse_gate(gate, higher_is_better=directions, methods=methods)
        except MalformedGateError as exc:
            raise SpecError(f"{where}: gates[{index}]: {exc}") from None
        if parsed.id in ids:
            raise SpecError(f"{where}: gates[{index}]: gate id {parsed.id!r} is used twice")
        ids.add(parsed.id)
    return copy.deepcopy(value)


def load_all_specs(specs_dir: str | Path | None = None, *,
                   broken: dict[str, SpecError] | None = None) -> dict[str, BenchmarkSpec]:
    """Every spec of the specs folder by benchmark name. With ``broken`` given, a spec that does not
    load is put there under its file name (stem) instead of raising, so that one bad file stops
    only its own benchmark."""
    specs_dir = specs_dir or os.environ.get("LITBENCH_SPECS_DIR") or SPECS_DIR
    specs = {}
    for path in sorted(Path(specs_dir).glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            if broken is None:
                raise
            broken[path.stem] = exc
            continue
        if spec.name in specs:
            raise SpecError(f"{path}: benchmark name {spec.name!r} is also used by {specs[spec.name].path}")
        specs[spec.name] = spec
    return specs
