"""Before/after a code change, measured in one run: a method's training epochs with its model
module as it was at an earlier git revision and as it is in the working tree.

Why it exists: the performance issue asks for before/after ratios measured in the same run, and on a
shared VM whose speed drifts 2x within minutes, times from two sessions (or even two consecutive
suites) are not comparable. Here both versions train in one process, on the same data, seed and
resolved config, in counterbalanced pairs (before then after, then after then before, ...), each
through the plain loop of ``litbench perf parity`` (no Lightning bookkeeping, so only the model code
differs). The speed-up is the geometric mean of the paired ratios (before / after epoch time) with
a 95% bootstrap interval over pairs, as in ``parity.paired_ratio``. The per-step losses of both
versions are compared too: a pure speed-up keeps them equal up to float rounding.

The module that defines the method's model class (its ``class_path``) is taken from the old
revision (``git show REV:path``, loaded under a private module name), and so are the modules named
with ``--also-module`` (e.g. a loss file the change touched); everything else it imports comes from
the working tree.
"""

from __future__ import annotations

import copy
import importlib.util
import statistics
import subprocess
import sys
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.perf.parity import LoopResult, _timed_mean, counterbalanced_pairs, paired_ratio, plain_fit

class RevisionError(ValueError):
    """The revision or the module file in it cannot be read (a one-line usage error)."""


def _git(repository: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repository, capture_output=True, text=True)
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"git {' '.join(args)} failed"
        raise RevisionError(message)
    return done.stdout


def _module_source_file(module_name: str) -> tuple[Path, str]:
    """(the git work tree holding the module's file, the file's path in it)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise RevisionError(f"cannot find the source file of {module_name}")
    path = Path(spec.origin).resolve()
    try:
        top = Path(_git(path.parent, "rev-parse", "--show-toplevel").strip()).resolve()
    except RevisionError as exc:
        raise RevisionError(f"{path} is not in a git checkout ({exc}); before-after needs the repository's history") from exc
    return top, path.relative_to(top).as_posix()


def load_module_at(revision: str, module_name: str, *, also: tuple[str, ...] = ()) -> tuple[str, str]:
    """Import ``module_name`` as it was at ``revision`` (of the git repository holding its file);
    returns (full sha, the private name it is loaded as). The modules in ``also`` (e.g. a loss file
    split off later) are taken from that revision too: they are loaded first, and while
    ``module_name`` executes, its imports of them resolve to those old versions."""
    repository, path = _module_source_file(module_name)
    try:
        sha = _git(repository, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").strip()
    except RevisionError as exc:
        raise RevisionError(f"unknown git revision {revision!r}; give a commit, tag or branch of {repository}") from exc
    old_versions = {name: sys.modules[load_module_at(sha, name)[1]] for name in also}
    try:
        source = _git(repository, "show", f"{sha}:{path}")
    except RevisionError as exc:
        raise RevisionError(f"{path} does not exist at {revision} ({sha[:10]}); pick a revision that has it") from exc
    suffix = "_with_" + "_".join(sorted(also)).replace(".", "_") if also else ""
    alias = f"_litbench_at_{sha[:12]}_{module_name.replace('.', '_')}{suffix}"
    if alias not in sys.modules:
        module = types.ModuleType(alias)
        module.__file__ = f"{sha[:12]}:{path}"
        sys.modules[alias] = module  # before exec: dataclasses and pickling look the module up by name
        current_versions = {name: sys.modules.get(name) for name in old_versions}
        sys.modules.update(old_versions)
        try:
            exec(compile(source, module.__file__, "exec"), module.__dict__)
        except Exception:
            del sys.modules[alias]
            raise
        finally:
            for name, current in current_versions.items():
                if current is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = current
    return sha, alias


@dataclass
class BeforeAfterResult:
    revision: str  # the full sha of the "before" code
    module: str  # the module taken from it
    also: list[str]  # further modules taken from it (``--also-module``)
    before_epoch_s: float  # median timed epoch of each side (each run's first epoch left out)
    after_epoch_s: float
    speedup: float  # before / after: geometric mean of the paired ratios; > 1 = the working tree is faster
    speedup_ci: tuple[float, float] | None  # 95% bootstrap interval over pairs; None with < 2 pairs
    faster: str  # "yes" / "no" / "inconclusive": the interval against 1
    pair_speedups: list[float]
    max_rel_loss_diff: float  # per step, |before - after| / |before|, over the first pair
    steps: int
    epochs: int
    repeats: int
    before_runs: list[list[float]]
    after_runs: list[list[float]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _faster(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return "inconclusive"
    return "yes" if interval[0] > 1 else "no" if interval[1] <= 1 else "inconclusive"


def compare_revisions(config: dict[str, Any], *, revision: str, epochs: int, repeats: int,
                      also: tuple[str, ...] = ()) -> BeforeAfterResult:
    module_name, class_name = config["model"]["class_path"].rsplit(".", 1)
    sha, alias = load_module_at(revision, module_name, also=also)
    if not hasattr(sys.modules[alias], class_name):
        raise RevisionError(f"{module_name} at {revision} has no class {class_name}; pick a revision that has it")
    before_config = copy.deepcopy(config)
    before_config["model"]["class_path"] = f"{alias}.{class_name}"
    before, after = counterbalanced_pairs(lambda: plain_fit(before_config, epochs=epochs),
                                          lambda: plain_fit(config, epochs=epochs), repeats=repeats)
    before_means = [_timed_mean(run.epoch_seconds) for run in before]
    after_means = [_timed_mean(run.epoch_seconds) for run in after]
    speedup, interval = paired_ratio(before_means, after_means)
    reference, other = before[0].losses, after[0].losses
    if len(reference) != len(other):
        raise RuntimeError(f"the versions ran a different number of steps: before {len(reference)}, after {len(other)}")
    loss_diff = max((abs(a - b) / max(abs(a), 1e-12) for a, b in zip(reference, other)), default=0.0)

    def pooled(runs: list[LoopResult]) -> float:
        return statistics.median(s for run in runs for s in (run.epoch_seconds[1:] or run.epoch_seconds))

    return BeforeAfterResult(revision=sha, module=module_name, also=list(also), before_epoch_s=pooled(before), after_epoch_s=pooled(after),
                             speedup=speedup, speedup_ci=interval, faster=_faster(interval),
                             pair_speedups=[b / a for b, a in zip(before_means, after_means)],
                             max_rel_loss_diff=loss_diff, steps=len(reference), epochs=epochs, repeats=repeats,
                             before_runs=[run.epoch_seconds for run in before],
                             after_runs=[run.epoch_seconds for run in after])

