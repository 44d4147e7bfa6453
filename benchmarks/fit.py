"""`litbench fit --config resolved.yaml`: one run through LightningCLI.

A record's ``config`` (or ``litbench run``'s resolved config) is a LightningCLI config plus a
``litbench`` section; that section and the harness-owned Trainer keys are dropped, the rest goes to
``LightningCLI`` unchanged, which fits the model and then tests it. Stages are not built here:
``fit`` is for one self-contained module (use ``litbench run`` for staged methods).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI, instantiate_class

from benchmarks.contract import linked_model_config
from benchmarks.spec import SpecError

# Modules that moved when a paper's files became a package (modules/<paper>/): records keep the class
# paths they ran with (so their config hashes stay what they were), and `fit` reads them through this
# table. `litbench run` plans with the specs' new paths, so those methods' records are re-run once.
MOVED_MODULES = {
    "modules.reft_baselines": "modules.reft.baselines",
    "modules.common.clustering": "modules.dcagc.clustering",
}


def current_class_path(class_path: str) -> str:
    """``class_path`` with a moved module replaced by where it lives now."""
    module, _, name = class_path.rpartition(".")
    return f"{MOVED_MODULES.get(module, module)}.{name}"


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: malformed config ({type(exc).__name__})") from None
    if isinstance(config, dict) and "config" in config and "config_hash" in config:
        config = config["config"]  # a whole run record was given
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise SpecError(f"{path}: expected a resolved config with model: and data: (e.g. a record's config)")
    return config


def fit_from_config(path: str | Path) -> dict[str, float]:
    config = load_config(path)
    if config.get("litbench", {}).get("stages"):
        raise SpecError(f"{path}: this method has stages; run it with `litbench run` so they are built and cached")
    lightning_config = {key: config[key] for key in ("seed_everything", "trainer", "model", "data") if key in config}
    for key in ("model", "data"):
        lightning_config[key] = {**lightning_config[key],
                                 "class_path": current_class_path(lightning_config[key]["class_path"])}
    # Values the data decides (a COCO json's or an ImageFolder's class count), as `litbench run` fills them.
    lightning_config["model"] = linked_model_config(lightning_config["model"], instantiate_class((), lightning_config["data"]))
    trainer = dict(lightning_config.get("trainer", {}))
    trainer.update({"logger": False, "enable_checkpointing": False})
    lightning_config["trainer"] = trainer
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI parses args= alone; litbench's own argv is not for it
    try:
        cli = LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                           run=False, args=lightning_config, save_config_callback=None)
    finally:
        sys.argv = argv
    if getattr(cli.model, "requires_fit", True):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return {key: float(value) for result in results for key, value in result.items()}
