"""What a datamodule can read, stated once beside its reader (shown by ``litbench datasets``).

Each datamodule family lists its on-disk formats with ``dataset_formats()``: per format, the
built-in datasets that are presets of it, the layout it expects under ``--data-dir``, and, when the
format takes data of your own, the ``data.init_args`` that describe such a dataset (an example,
with ``NAME`` standing for the dataset name you pass to ``--datasets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetFormat:
    name: str                          # e.g. "NIFTY csv + edge list"
    presets: tuple[str, ...]           # built-in dataset names of this format
    layout: str                        # what goes where under --data-dir (NAME = your dataset's name)
    own_data_args: dict[str, Any] | None = None  # example data.init_args for a dataset of your own; None: presets only
    own_name: str = "mydata"           # the example dataset name used in the command
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reads_own_data(self) -> bool:
        return self.own_data_args is not None
