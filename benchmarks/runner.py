"""Run ONE resolved config (benchmark, method, dataset, profile, seed) and return its RunRecord.

``execute_run`` is called in-process for plain local runs. For DDP, parallel workers and SLURM the
launcher writes a job file and runs ``python -m benchmarks.runner JOB.json`` instead, so that
Lightning's DDP launcher (which re-executes the current command for every rank) re-runs exactly
one run, never the whole suite. Only global rank 0 writes the record.

Protocol: seed everything -> build cached stages -> instantiate datamodule and model from their
class paths -> set ``model.artifact_dir`` (a staging folder for files meant for readers; published
to ``<run_id>.artifacts/`` and listed in the record when the run succeeds) -> ``trainer.fit`` (skipped for modules with ``requires_fit = False``, e.g. k-means) ->
``trainer.test``; the record's metrics are what the module logged under ``test/<name>``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.cli import instantiate_class

from benchmarks.process import configure_process
from benchmarks.contract import StageModule, linked_model_config
from benchmarks.costs import CostMeter, PeakRSSSampler, count_parameters, matmul_probe_flops
from benchmarks.peak_flops import device_peak_flops
from benchmarks.resolve import identity_of, stage_config
from benchmarks.stages import StageCache
from leaderboard.records import (STATUS_FAILED, STATUS_OK, RecordStore, RunRecord, artifact_dir_path, config_hash, utc_now,
                                 write_json_atomic)

REPO_ROOT = Path(__file__).resolve().parent.parent
STAGE_COST_FILE = "stage_cost.json"  # beside a stage's cached artifact: what training it cost
TRAINING_RATE_KEYS = ("train_samples_per_s", "flops", "data_share", "achieved_gflops", "probe_gflops", "mfu")
LIGHTNING_SETUP_KEYS = ("logger", "callbacks", "enable_checkpointing", "enable_progress_bar",
                        "enable_model_summary", "default_root_dir")


def quiet_lightning() -> None:
    """Keep the suite's own progress readable: Lightning's banners and known-benign warnings off."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in (".*does not have many workers.*", ".*`training_step` returned `None`.*",
                    ".*You are using `torch.load` with `weights_only=False`.*", ".*No `training_step`.*",
                    ".*configure_optimizers.*", ".*GPU available but not used.*", ".*smaller than the logging interval.*",
                    ".*The number of training batches.*", ".*Trying to infer the `batch_size`.*",
                    ".*but have no `validation_step`.*", r".*it is recommended to use `Trainer\(devices=1, num_nodes=1\)`.*"):
        warnings.filterwarnings("ignore", message=pattern)


@functools.lru_cache(maxsize=1)
def software_versions() -> dict[str, Any]:
    import lightning
    import torchmetrics

    versions: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                                "lightning": lightning.__version__, "torchmetrics": torchmetrics.__version__}
    # from the installed metadata: importing timm and torch_geometric only to read their versions
    # cost ~1.6 s per run process on 2 cores (harness overhead) for benchmarks that use neither
    for name in ("torch_geometric", "timm"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
        versions["git_sha"] = sha.stdout.strip() or None
        versions["git_dirty"] = bool(dirty.stdout.strip()) if sha.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        versions["git_sha"], versions["git_dirty"] = None, None
    return versions


def hardware_info(trainer_config: dict[str, Any], world_size: int | None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpu": cpu, "cores": os.cpu_count(), "accelerator": trainer_config.get("accelerator"),
            "devices": trainer_config.get("devices"), "strategy": trainer_config.get("strategy"),
            "num_nodes": trainer_config.get("num_nodes"), "world_size": world_size, "gpu_names": gpus,
            "torch_threads": torch.get_num_threads()}  # a CPU run's speed (and last float digits) depend on it


def _training_rates(meter: CostMeter, trainer_config: dict[str, Any]) -> dict[str, Any]:
    """The record's training-speed fields of one metered fit."""
    return {"train_samples_per_s": meter.samples_per_s, "flops": meter.flops_per_step,
            "data_share": meter.data_share, **_flop_rates(meter, trainer_config)}


def _rates_of_trained_stage(stages: dict[str, Any]) -> dict[str, Any]:
    """A run that trains nothing itself (it tests a cached stage's network, e.g. LRPET's dense arm)
    reports the training speed of the last stage that trained, naming it in ``metered_stage``."""
    for name in reversed(list(stages)):
        cost = stages[name].get("cost") or {}
        if cost.get("train_samples_per_s") is not None:
            return {key: cost.get(key) for key in TRAINING_RATE_KEYS} | {"metered_stage": name}
    return {}


def _flop_rates(meter: CostMeter, trainer_config: dict[str, Any]) -> dict[str, float | None]:
    """Achieved training GFLOP/s and the utilisation of the run's ceiling: the GPUs' peak at the
    run's precision (Lightning's table), or on CPU a matmul probe of this process (``probe_gflops``)."""
    achieved = meter.achieved_flops_per_s()
    peak = _peak_flops(trainer_config)
    probe = None
    on_cpu = trainer_config.get("accelerator") == "cpu" or not torch.cuda.is_available()
    if peak is None and achieved is not None and on_cpu:
        probe = matmul_probe_flops()
        peak = probe
    return {"achieved_gflops": None if achieved is None else achieved / 1e9,
            "probe_gflops": None if probe is None else probe / 1e9,
            "mfu": meter.model_flops_utilisation(peak)}


def _peak_flops(trainer_config: dict[str, Any]) -> float | None:
    """Peak dense FLOP/s of all the run's GPUs at its precision (``benchmarks.peak_flops``); None on CPU."""
    if trainer_config.get("accelerator") not in ("gpu", "cuda", "auto") or not torch.cuda.is_available():
        return None
    per_device = device_peak_flops(str(trainer_config.get("precision", "32-true")))
    devices = trainer_config.get("devices", 1)
    count = int(devices) if str(devices).isdigit() else torch.cuda.device_count()
    return per_device * count * int(trainer_config.get("num_nodes", 1)) if per_device else None


def _make_trainer(trainer_config: dict[str, Any], *, root_dir: Path, callbacks: list[pl.Callback],
                  logger: Any = False, profiler: Any = None) -> pl.Trainer:
    kwargs = {k: v for k, v in trainer_config.items() if k not in LIGHTNING_SETUP_KEYS}
    if profiler is not None and kwargs.get("profiler") is None:
        kwargs["profiler"] = profiler  # the cost meter's data-time profiler; a configured profiler wins
    return pl.Trainer(**kwargs, logger=logger, callbacks=callbacks, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root_dir))


def _build_stages(config: dict[str, Any], cache: StageCache, root_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build (or fetch) each stage; returns the init args to inject and the record's stage info."""
    injected: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for stage in config["litbench"].get("stages", []):
        def build(folder: Path, stage: dict[str, Any] = stage) -> Path:
            pl.seed_everything(stage["seed"], workers=True, verbose=False)
            datamodule = instantiate_class((), config["data"])
            model = instantiate_class((), linked_model_config(stage["model"], datamodule))
            meter = CostMeter()
            trainer = _make_trainer(stage["trainer"], root_dir=root_dir, callbacks=[meter], profiler=meter.profiler)
            fit_started = time.perf_counter()
            trainer.fit(torch.compile(model) if stage.get("compile") else model, datamodule=datamodule)
            # The stage's training cost travels with its cached artifact, so every run that reuses
            # the stage (a cache hit) still reports what training it cost and how fast it ran.
            write_json_atomic(folder / STAGE_COST_FILE, {"fit_s": round(time.perf_counter() - fit_started, 4),
                                                         **_training_rates(meter, stage["trainer"])})
            if isinstance(model, StageModule):
                return Path(model.save_stage_artifact(folder))
            checkpoint = folder / "model.ckpt"
            trainer.save_checkpoint(checkpoint)
            return checkpoint

        def barrier() -> None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()

        artifact = cache.get_or_build(stage["name"], stage_config(config, stage), build,
                                      is_writer=rank_zero_only.rank == 0, barrier=barrier)
        injected[stage["pass_as"]] = str(artifact.path)
        info[stage["name"]] = artifact.as_record()
        cost_file = cache.folder(stage["name"], artifact.key) / STAGE_COST_FILE
        if cost_file.exists():  # absent for artifacts cached before stages were metered
            info[stage["name"]]["cost"] = json.loads(cost_file.read_text())
    return injected, info


def _wandb_logger(config: dict[str, Any], *, mode: str, project: str, save_dir: Path) -> Any:
    if mode == "disabled":
        return False
    os.environ.setdefault("WANDB_SILENT", "true")  # wandb's banners would bury the suite's progress lines
    from lightning.pytorch.loggers import WandbLogger

    meta = config["litbench"]
    save_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, group=meta["benchmark"], name=f"{meta['method']}/{meta['dataset']}/seed-{meta['seed']}",
                       save_dir=str(save_dir), offline=(mode == "offline"), config=config, job_type=meta["profile"],
                       tags=[meta["benchmark"], meta["method"], meta["role"], meta["profile"], meta["dataset"]])


def _test_metrics(results: list[dict[str, Any]]) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {}
    for result in results:
        for key, value in result.items():
            if key.startswith("test/"):
                number = float(value)
                metrics[key.removeprefix("test/")] = number if math.isfinite(number) else None  # JSON has no NaN
    return metrics


def _use_validation_split(datamodule: pl.LightningDataModule) -> None:
    """Calibration runs score the model with its own test_step on the validation split, so a
    hyper-parameter is chosen without looking at test labels. Called before anything trains: a
    missing or empty split fails the run at once."""
    if type(datamodule).val_dataloader is pl.LightningDataModule.val_dataloader:
        raise ValueError(f"{type(datamodule).__name__} has no validation split to calibrate on; add one "
                         "(held out of the training data) before sweeping on it")
    if getattr(datamodule, "has_validation_split", True) is False:
        raise ValueError(f"{type(datamodule).__name__} holds no validation split in this configuration; give it "
                         "one (e.g. --set data.init_args.val_fraction=0.3) before sweeping on it")
    datamodule.prepare_data()
    datamodule.setup("validate")
    dataset = getattr(datamodule.val_dataloader(), "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
        raise ValueError(f"{type(datamodule).__name__}'s validation split is empty; give it images/nodes "
                         "(e.g. --set data.init_args.val_size=500) before sweeping on it")
    datamodule.test_dataloader = datamodule.val_dataloader  # type: ignore[method-assign]


def execute_run(config: dict[str, Any], *, results_dir: str | Path, cache_dir: str | Path,
                wandb_mode: str = "disabled", wandb_project: str = "litbench",
                spec_snapshot: dict[str, Any] | None = None, write: bool = True) -> RunRecord:
    """Run one resolved config; write its record (rank 0 only) and return it. Never raises for a
    failing run: the failure is the record."""
    run_started, run_cpu_started = time.perf_counter(), time.process_time()
    quiet_lightning()
    meta = config["litbench"]
    results_dir, cache_dir = Path(results_dir), Path(cache_dir)
    root_dir = cache_dir / "lightning"
    record = RunRecord(benchmark=meta["benchmark"], method=meta["method"], role=meta["role"], dataset=meta["dataset"],
                       profile=meta["profile"], seed=int(meta["seed"]), status=STATUS_FAILED, config=config,
                       config_hash=config_hash(identity_of(config)), spec=spec_snapshot or {},
                       software=software_versions(), started_at=utc_now())
    if threads := os.environ.get("LITBENCH_NUM_THREADS"):
        torch.set_num_threads(int(threads))
    trainer: pl.Trainer | None = None
    logger: Any = False
    # Files a module writes for readers go to a private staging folder and move next to the record
    # only when the run succeeds, so a failed rerun never leaves an ok record pointing at its files.
    # (modules write on global rank 0 only; other ranks' staging folders are dropped).
    staging = cache_dir / "artifacts-staging" / f"{record.config_hash}-{os.getpid()}"
    try:
        stages_started = time.perf_counter()
        injected, record.stages = _build_stages(config, StageCache(cache_dir), root_dir)
        stage_s = time.perf_counter() - stages_started
        pl.seed_everything(int(config["seed_everything"]), workers=True, verbose=False)
        datamodule = instantiate_class((), config["data"])
        if meta.get("evaluate_on") == "val":
            _use_validation_split(datamodule)
        model_config = {"class_path": config["model"]["class_path"],
                        "init_args": {**config["model"].get("init_args", {}), **injected}}
        model = instantiate_class((), linked_model_config(model_config, datamodule))
        shutil.rmtree(staging, ignore_errors=True)
        model.artifact_dir = staging
        # Opt-in torch.compile of the method's module (`litbench run --compile`); Lightning trains the
        # compiled module and unwraps it where it needs the LightningModule itself.
        trained = torch.compile(model) if meta.get("compile") else model
        meter = CostMeter()
        logger = _wandb_logger(config, mode=wandb_mode, project=wandb_project, save_dir=results_dir)
        trainer = _make_trainer(config["trainer"], root_dir=root_dir, callbacks=[meter], logger=logger,
                                profiler=meter.profiler)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with PeakRSSSampler() as rss:
            fit_started = time.perf_counter()
            if getattr(model, "requires_fit", True):
                trainer.fit(trained, datamodule=datamodule)
            fit_s = time.perf_counter() - fit_started
            eval_started = time.perf_counter()
            results = trainer.test(trained, datamodule=datamodule, verbose=False)
            eval_s = time.perf_counter() - eval_started
        record.metrics = _test_metrics(results)
        if not record.metrics:
            raise RuntimeError(f"{config['model']['class_path']} logged no test/<metric> values in test_step")
        record.cost = {"fit_s": round(fit_s, 4), "eval_s": round(eval_s, 4), "stage_s": round(stage_s, 4),
                       "train_samples_per_s": meter.samples_per_s,
                       "peak_rss_mb": round(rss.peak_mb, 1),
                       "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
                       "params": count_parameters(model), **_training_rates(meter, config["trainer"])}
        if meter.samples_per_s is None:
            record.cost.update(_rates_of_trained_stage(record.stages))
        record.status = STATUS_OK
        if logger:
            logger.experiment.summary.update({f"cost/{k}": v for k, v in record.cost.items() if v is not None})
    except Exception as exc:  # a failing run is a result, recorded; the suite goes on
        record.error = {"type": type(exc).__name__, "message": str(exc).splitlines()[0][:500] if str(exc) else "",
                        "traceback_tail": "".join(traceback.format_exc().splitlines(keepends=True)[-25:])}
    finally:
        if logger:
            try:
                logger.experiment.finish(exit_code=0 if record.status == STATUS_OK else 1)
            except Exception:  # noqa: BLE001 - wandb failing to close must not lose the record
                pass
    # everything of this run but the record write (harness overhead = run_s - stage_s - fit_s - eval_s)
    if record.ok:
        record.cost["run_s"] = round(time.perf_counter() - run_started, 4)
        record.cost["cpu_s"] = round(time.process_time() - run_cpu_started, 4)
    world_size = trainer.world_size if trainer is not None else None
    record.hardware = hardware_info(config["trainer"], world_size)
    record.finished_at = utc_now()
    is_rank_zero = trainer.global_rank == 0 if trainer is not None else rank_zero_only.rank == 0
    if write and is_rank_zero and record.ok:
        record.artifacts = _publish_artifacts(staging, results_dir, record.run_id)
    shutil.rmtree(staging, ignore_errors=True)
    if write and is_rank_zero:
        RecordStore(results_dir).write(record)
    return record


def _publish_artifacts(staging: Path, results_dir: Path, run_id: str) -> list[str]:
    """Move the run's staged files to ``<run_id>.artifacts/`` (replacing an older run's) and list them."""
    if not staging.is_dir() or not any(path.is_file() for path in staging.rglob("*")):
        return []
    final = artifact_dir_path(results_dir, run_id)
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(final))
    return sorted(str(path.relative_to(results_dir)) for path in final.rglob("*") if path.is_file())


def write_job(path: Path, *, config: dict[str, Any], results_dir: Path, cache_dir: Path, wandb_mode: str,
              wandb_project: str, spec_snapshot: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "results_dir": str(results_dir), "cache_dir": str(cache_dir),
                                "wandb_mode": wandb_mode, "wandb_project": wandb_project,
                                "spec_snapshot": spec_snapshot}, default=str))
    return path


def run_job_file(path: str | Path) -> str:
    """Execute a job file written by the launcher; returns the run's status (used by submitit too)."""
    job = json.loads(Path(path).read_text())
    record = execute_run(job["config"], results_dir=job["results_dir"], cache_dir=job["cache_dir"],
                         wandb_mode=job["wandb_mode"], wandb_project=job["wandb_project"],
                         spec_snapshot=job["spec_snapshot"])
    return record.status


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the suite that started it dies (even by SIGKILL).

    Workers run in their own session (so a timeout can kill their DDP ranks as a group), which
    also takes them out of the suite's process group: without this, killing a suite would leave
    its current run training on as an orphan. ``LITBENCH_PARENT_PID`` closes the race where the
    suite died before the request was made.
    """
    # Popped, so that the DDP ranks Lightning starts from this process (copies of its environment)
    # do not mistake this worker for the suite and exit.
    parent = os.environ.pop("LITBENCH_PARENT_PID", None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.runner JOB.json", file=sys.stderr)
        return 2
    configure_process()
    die_with_parent()
    return 0 if run_job_file(argv[0]) == STATUS_OK else 1


if __name__ == "__main__":
    sys.exit(main())
