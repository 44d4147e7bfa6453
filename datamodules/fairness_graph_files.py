"""Reading the NIFTY-format fairness graphs from their original files (used by
``datamodules/fairness_graphs.py``, whose docstring describes the datamodule and the generated graph).

Real datasets (original files and columns, read from ``data_dir`` = ``--data-dir`` / env
``LITBENCH_DATA``; looked up in ``<data_dir>/fair_<key>/`` (litbench's shared layout), then
``<data_dir>/<key>/`` (the NIFTY/RELIANT ``dataset/<key>/`` layout), then ``<data_dir>/``):

==========  =====================================  ==========  ========  =======================
name        files                                  label       s         split (python ``random``)
==========  =====================================  ==========  ========  =======================
German      german.csv, german_edges.txt           GoodCustom. Gender    seed 0, per class
                                                   (-1 -> 0)   (Female   min(50 %, 500) / 25 / 25 %
                                                               = 1)
Bail        bail.csv, bail_edges.txt[.gz]          RECID       WHITE     seed 20, per class
                                                                         30 / 20 / 50 %, or
                                                                         split/{train,val,test}_split.npy
Credit      credit.csv, credit_edges.txt[.gz|.zip] NoDefault.  Age       seed 20, per class
                                                                         min(50 %, 500) / 25 / 25 %
Pokec-z/n   region_job[_2].csv + _relationship.txt I_am_work.  region    seed 19, labelled nodes
                                                   (>1 -> 1)             min(50 %, 1000)/25/25 %
==========  =====================================  ==========  ========  =======================

Features follow the loaders of the RELIANT code (``src/CPF-master/data/utils.py``): German drops
``OtherLoansAtStore`` and ``PurposeOfLoan`` and min-max scales LoanAmount, Age and LoanDuration to
[-1, 1]; Bail keeps every column but RECID (WHITE stays, TIME and FILE are the last two) and
row-normalises by the row sum. RELIANT has no Credit loader (see the paper spec), so Credit follows
NIFTY: every column but the label and ``Single``, min-max scaled to [-1, 1] except the sensitive
column (NIFTY's ``feature_norm``). Pokec follows NIFTY/FairGNN (``user_id``, label and s dropped
from X; label -1 = unlabelled). The splits reproduce the official ``random.seed(k); shuffle``
per class, so they are fixed by the data, not by the run seed. Nodes between the capped train
part and the validation part (German, Credit) are in no split, as in the official code.

**Missing edge files** are rebuilt as the NIFTY/RELIANT ``build_relationship`` does: with
sim(i, j) = 1 / (1 + ‖x_i − x_j‖), node i links to every j ≠ i with sim(i, j) > t · max_{k≠i}
sim(i, k) (t = 0.8 German, 0.6 Bail, 0.7 Credit), on the raw columns with the per-dataset scaling
of :data:`EDGE_BUILD_SCALING`. With German's min-max scaling this reproduces the shipped
``german_edges.txt`` edge for edge (a test checks it). ``credit_edges.txt`` is not available
anywhere (see ``fair_credit/SOURCE.md``); NIFTY's commented-out z-scoring of five amount columns
is the scaling that comes closest to its size: 1,635,712 undirected pairs here vs 1,421,858 in the
original (from the DGL edge count in the paper spec), so Credit's graph is a documented stand-in.
The built edges are cached under ``<cache_dir>/fair_graphs/``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data
from torch_geometric.utils import add_self_loops, coalesce, remove_self_loops, to_undirected

from datamodules.graphs import _exclusive_lock
from datamodules.integrity import verify_md5

SYNTHETIC_NAME = "fair-sbm-synthetic"
# md5 of the NIFTY repository's files (yushundong/NIFTY dataset/; an edge list in .gz is checked by
# its decompressed text). A truncated edge list otherwise trains on half a graph without a word.
NIFTY_MD5 = {
    "german.csv": "f45fc0bd1e11cc09d0e7bb913c195693",
    "german_edges.txt": "203d87893276de72c42c880b9420a69f",
    "bail.csv": "17a2258ede4d6f9a6913d9ec3c2ce9f0",
    "bail_edges.txt": "813b74b46e231fc09dcc8f8ef8173eb9",
    "credit.csv": "9b6d51a8913d74bc80867fd06dc6e071",
}
GET_NIFTY = "replace it with the file from the NIFTY repository (yushundong/NIFTY, dataset/) or its SOURCE.md copy"
EDGE_BUILD_BLOCK_ROWS = 2048


SPLIT_RULES = ("capped_half", "thirty_twenty_fifty", "labelled_half")
FEATURE_SCALINGS = ("none", "row_sum", "minmax_columns", "minmax_all_but_sensitive")
EDGE_ID_SPACES = ("row", "id")


@dataclass(frozen=True)
class FairDatasetFormat:
    """How one NIFTY-format dataset is laid out on disk and turned into a graph.

    The five built-in datasets are presets of this description (:data:`FORMATS`); any other graph
    of the format is read from a name plus ``data.init_args.graph_format`` = the fields below
    (``label`` and ``sensitive`` are required, see :func:`resolve_format`).
    """

    key: str                      # file stem and folder name: <key>.csv, <key>_edges.txt
    label: str                    # binary label column (-1/1 or 0/1; with labelled_half, < 0 = unlabelled)
    sensitive: str                # binary sensitive column (0/1, or text with protected_value = 1)
    drop: tuple[str, ...] = ()    # columns removed from X besides the label
    sensitive_in_features: bool = True
    feature_scaling: str = "none"  # none | row_sum | minmax_columns | minmax_all_but_sensitive
    minmax_columns: tuple[str, ...] = ()
    split: str = "capped_half"    # capped_half | thirty_twenty_fifty | labelled_half
    split_seed: int = 20
    label_number: int = 1000
    edges_suffix: str = "_edges.txt"
    id_column: str | None = None  # a node-id column (never a feature); edge_ids="id" maps edges through it
    build_threshold: float | None = None
    folders: tuple[str, ...] = field(default_factory=tuple)
    features_file: str | None = None  # default <key>.csv
    edges_file: str | None = None     # default <key><edges_suffix>[.gz|.zip]
    edge_ids: str = "row"             # row: 0-based row numbers of the csv; id: values of id_column
    protected_value: str | None = None  # a text sensitive column: this value (any case) is s = 1

    def __post_init__(self) -> None:
        for name, value, allowed in (("split", self.split, SPLIT_RULES),
                                     ("feature_scaling", self.feature_scaling, FEATURE_SCALINGS),
                                     ("edge_ids", self.edge_ids, EDGE_ID_SPACES)):
            if value not in allowed:
                raise ValueError(f"fairness graph format: {name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.edge_ids == "id" and self.id_column is None:
            raise ValueError("fairness graph format: edge_ids='id' needs id_column (the column the edge list names)")

    @property
    def table_name(self) -> str:
        return self.features_file or f"{self.key}.csv"

    @property
    def edge_name(self) -> str:
        return self.edges_file or f"{self.key}{self.edges_suffix}"


FORMATS = {
    "german": FairDatasetFormat(key="german", label="GoodCustomer", sensitive="Gender",
                                drop=("OtherLoansAtStore", "PurposeOfLoan"), feature_scaling="minmax_columns",
                                minmax_columns=("LoanAmount", "Age", "LoanDuration"), split_seed=0,
                                build_threshold=0.8, folders=("fair_german", "german"), protected_value="Female"),
    "bail": FairDatasetFormat(key="bail", label="RECID", sensitive="WHITE", feature_scaling="row_sum",
                              split="thirty_twenty_fifty", build_threshold=0.6, folders=("fair_bail", "bail")),
    "credit": FairDatasetFormat(key="credit", label="NoDefaultNextMonth", sensitive="Age", drop=("Single",),
                                feature_scaling="minmax_all_but_sensitive", build_threshold=0.7,
                                folders=("fair_credit", "credit")),
    "pokec_z": FairDatasetFormat(key="region_job", label="I_am_working_in_field", sensitive="region",
                                 drop=("user_id",), sensitive_in_features=False, split="labelled_half",
                                 split_seed=19, edges_suffix="_relationship.txt", id_column="user_id",
                                 edge_ids="id", folders=("fair_pokec", "pokec")),
    "pokec_n": FairDatasetFormat(key="region_job_2", label="I_am_working_in_field", sensitive="region",
                                 drop=("user_id",), sensitive_in_features=False, split="labelled_half",
                                 split_seed=19, edges_suffix="_relationship.txt", id_column="user_id",
                                 edge_ids="id", folders=("fair_pokec", "pokec")),
}
DISPLAY_NAMES = {"german": "German", "bail": "Bail", "credit": "Credit", "pokec_z": "Pokec-z", "pokec_n": "Pokec-n"}
ALIASES = {"recidivism": "bail", "pokec-z": "pokec_z", "pokec-n": "pokec_n"}
# Column scaling used only to *build* a missing edge file (see the module docstring).
EDGE_BUILD_SCALING = {
    "german": ("minmax", ("LoanAmount", "Age", "LoanDuration")),
    "credit": ("zscore", ("MaxBillAmountOverLast6Months", "MaxPaymentAmountOverLast6Months", "MostRecentBillAmount",
                          "MostRecentPaymentAmount", "TotalMonthsOverdue")),
}


# ------------------------------------------------------------------------------------------------
# Splits and graph construction (pure functions; tests compare them with the official recipes)
# ------------------------------------------------------------------------------------------------
def official_split(labels: np.ndarray, *, rule: str, seed: int, label_number: int = 1000) -> tuple[np.ndarray, ...]:
    """Train/val/test node ids exactly as the NIFTY/RELIANT loaders draw them.

    ``random.seed(seed)`` then ``random.shuffle`` of class 0's ids, then class 1's (one RNG stream).
    ``capped_half``: per class train = first min(50 %, label_number // 2), val = 50-75 %, test = rest.
    ``thirty_twenty_fifty``: per class 30 / 20 / 50 %. ``labelled_half`` (Pokec): all labelled nodes
    (label >= 0) shuffled together, train = first min(50 %, label_number), val 50-75 %, test rest.
    """
    rng = random.Random(seed)
    if rule == "labelled_half":
        ids = list(np.flatnonzero(labels >= 0))
        rng.shuffle(ids)
        n = len(ids)
        parts = (ids[:min(int(0.5 * n), label_number)], ids[int(0.5 * n):int(0.75 * n)], ids[int(0.75 * n):])
        return tuple(np.asarray(part, dtype=np.int64) for part in parts)
    train, val, test = [], [], []
    for class_id in (0, 1):
        ids = list(np.flatnonzero(labels == class_id))
        rng.shuffle(ids)
        n = len(ids)
        if rule == "capped_half":
            train += ids[:min(int(0.5 * n), label_number // 2)]
            val += ids[int(0.5 * n):int(0.75 * n)]
            test += ids[int(0.75 * n):]
        elif rule == "thirty_twenty_fifty":
            train += ids[:int(0.3 * n)]
            val += ids[int(0.3 * n):int(0.5 * n)]
            test += ids[int(0.5 * n):]
        else:
            raise ValueError(f"unknown split rule {rule!r}")
    return tuple(np.asarray(part, dtype=np.int64) for part in (train, val, test))


def similarity_edges(features: np.ndarray, threshold: float) -> np.ndarray:
    """NIFTY's ``build_relationship``: i -> j (j ≠ i) when 1/(1+d_ij) > threshold · max_k≠i 1/(1+d_ik).

    Exact Euclidean distances in float64 (no matmul shortcut, so ties fall as in scipy), computed
    in row blocks so memory stays O(block · n) instead of the official O(n²).
    """
    points = torch.as_tensor(np.asarray(features, dtype=np.float64))
    n = points.size(0)
    pieces = []
    for start in range(0, n, EDGE_BUILD_BLOCK_ROWS):
        block = points[start:start + EDGE_BUILD_BLOCK_ROWS]
        distance = torch.cdist(block, points, compute_mode="donot_use_mm_for_euclid_dist")
        rows = torch.arange(block.size(0))
        distance[rows, rows + start] = float("inf")  # the official max_sim is the 2nd largest (self = 1)
        similarity = 1.0 / (1.0 + distance)
        keep = similarity > threshold * similarity.max(dim=1, keepdim=True).values
        source, target = keep.nonzero(as_tuple=True)
        pieces.append(torch.stack([source + start, target]))
    return torch.cat(pieces, dim=1).T.numpy()


def graph_edge_index(edges: np.ndarray, num_nodes: int) -> torch.Tensor:
    """Symmetrise, deduplicate and add one self loop per node (the official A + I)."""
    edge_index = torch.as_tensor(np.asarray(edges, dtype=np.int64).reshape(-1, 2).T)
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(f"edge ids must lie in 0..{num_nodes - 1}, got {int(edge_index.min())}..{int(edge_index.max())}")
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = to_undirected(edge_index, num_nodes=num_nodes)
    edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
    return coalesce(edge_index, num_nodes=num_nodes)


def _minmax(column: pd.Series) -> pd.Series:
    span = column.max() - column.min()
    return 2 * (column - column.min()) / span - 1 if span > 0 else column * 0.0


# ------------------------------------------------------------------------------------------------
# Reading the original files
# ------------------------------------------------------------------------------------------------
def resolve_dataset_key(name: str) -> str:
    key = name.strip().lower().replace(" ", "_")
    return ALIASES.get(key, key)


FORMAT_FIELDS = tuple(f.name for f in fields(FairDatasetFormat) if f.name != "key")
DESCRIBE_HINT = ("data.init_args.graph_format={label: COLUMN, sensitive: COLUMN} plus, as needed, features_file "
                 "(default NAME.csv), edges_file (default NAME_edges.txt; whitespace-separated pairs), id_column, "
                 f"edge_ids ({'|'.join(EDGE_ID_SPACES)}), split ({'|'.join(SPLIT_RULES)}), split_seed, "
                 f"feature_scaling ({'|'.join(FEATURE_SCALINGS)}), drop, protected_value")


def preset_names() -> list[str]:
    return [SYNTHETIC_NAME, *DISPLAY_NAMES.values()]


def resolve_format(name: str, description: dict[str, Any] | None = None) -> FairDatasetFormat:
    """The format of dataset ``name``: its preset (fields of ``description`` override the preset's),
    else the graph that ``description`` describes, with files ``<name>.csv`` / ``<name>_edges.txt``
    looked up in ``<data_dir>/fair_<name>/``, ``<data_dir>/<name>/`` or ``<data_dir>/``."""
    description = dict(description or {})
    unknown = sorted(set(description) - set(FORMAT_FIELDS) - {"key"})
    if unknown:
        raise ValueError(f"fairness graph format: unknown field(s) {', '.join(unknown)}; "
                         f"the fields are {', '.join(FORMAT_FIELDS)}")
    for name_of_tuple in ("drop", "minmax_columns", "folders"):
        if name_of_tuple in description:
            description[name_of_tuple] = tuple(description[name_of_tuple])
    key = resolve_dataset_key(name)
    if key in FORMATS:
        return replace(FORMATS[key], **description)
    if not description:
        raise ValueError(f"unknown fairness dataset {name!r} and no description of it: the presets are "
                         f"{', '.join(preset_names())}; describe your own graph with {DESCRIBE_HINT} "
                         f"(see `litbench datasets reliant`)")
    missing = [required for required in ("label", "sensitive") if required not in description]
    if missing:
        raise ValueError(f"fairness graph format of {name!r}: missing {', '.join(missing)} (the label and "
                         f"sensitive column names); {DESCRIBE_HINT}")
    description.setdefault("key", name)
    description.setdefault("folders", (f"fair_{name}", name))
    return FairDatasetFormat(**description)


def _find_table(fmt: FairDatasetFormat, data_root: Path) -> Path | None:
    for folder in (*[data_root / sub for sub in fmt.folders], data_root):
        if (folder / fmt.table_name).is_file():
            return folder
    return None


def _edge_file(fmt: FairDatasetFormat, folder: Path) -> Path | None:
    stem = fmt.edge_name
    for candidate in (stem, stem + ".gz", stem + ".zip"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def read_edge_file(path: Path) -> np.ndarray:
    """Whitespace-separated id pairs (ints or floats), plain, ``.gz`` or a one-member ``.zip``."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            handle = io.BytesIO(archive.read(members[0]))
    elif path.suffix == ".gz":
        handle = gzip.open(path, "rb")
    else:
        handle = open(path, "rb")
    try:
        with handle:
            table = pd.read_csv(handle, sep=r"\s+", header=None, dtype=np.float64)
    except (ValueError, OSError, EOFError) as exc:  # pandas parser errors, a broken gzip/zip, bad bytes
        raise ValueError(f"{path} cannot be read as an edge list ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}); {GET_NIFTY}") from None
    if table.shape[1] != 2:
        raise ValueError(f"{path}: expected two ids per line, got {table.shape[1]} columns")
    return table.to_numpy().astype(np.int64)


def _scaled_for_edge_building(key: str, table: pd.DataFrame) -> pd.DataFrame:
    scaled = table.astype(np.float64)
    how, columns = EDGE_BUILD_SCALING.get(key, ("none", ()))
    for column in columns:
        if how == "minmax":
            scaled[column] = _minmax(scaled[column])
        elif how == "zscore":
            scaled[column] = (scaled[column] - scaled[column].mean()) / scaled[column].std()
    return scaled


def _features(fmt: FairDatasetFormat, table: pd.DataFrame, feature_columns: list[str]) -> np.ndarray:
    frame = table[feature_columns].astype(np.float64)
    if fmt.feature_scaling == "minmax_columns":
        for column in fmt.minmax_columns:
            frame[column] = _minmax(frame[column])
    elif fmt.feature_scaling == "minmax_all_but_sensitive":
        for column in feature_columns:
            if column != fmt.sensitive:
                frame[column] = _minmax(frame[column])
    values = frame.to_numpy()
    if fmt.feature_scaling == "row_sum":
        row_sum = values.sum(axis=1, keepdims=True)
        values = np.divide(values, row_sum, out=np.zeros_like(values), where=row_sum != 0)
    return values.astype(np.float32)


def _missing_files_error(name: str, fmt: FairDatasetFormat, data_root: Path | None) -> FileNotFoundError:
    where = (", ".join(str(data_root / sub) for sub in fmt.folders) + f" or {data_root}") if data_root else \
        "<data_dir> (no data dir given: pass --data-dir or set LITBENCH_DATA)"
    source = (f"get them from the NIFTY repository (chirag126/nifty, dataset/{fmt.folders[-1]}/) or use "
              f"dataset {SYNTHETIC_NAME!r}") if resolve_dataset_key(name) in FORMATS else \
        "or name your files with data.init_args.graph_format.features_file / edges_file"
    return FileNotFoundError(f"dataset {name!r}: expected {fmt.table_name} (+ {fmt.edge_name}[.gz|.zip]) in {where}; "
                             f"{source}")


def read_fair_graph(name: str, data_root: Path | None, cache_root: Path,
                    fmt: FairDatasetFormat | None = None) -> tuple[Data, dict[str, np.ndarray]]:
    """Read one NIFTY-format dataset into (graph with x, edge_index, y, sensitive; split ids);
    ``fmt`` defaults to the preset of ``name``."""
    key = resolve_dataset_key(name)
    fmt = fmt or resolve_format(name)
    folder = _find_table(fmt, data_root) if data_root is not None else None
    if folder is None:
        raise _missing_files_error(name, fmt, data_root)
    verify_known_files(folder, cache_root)
    table_path = folder / fmt.table_name
    table = read_feature_table(table_path)
    missing = [c for c in (fmt.label, fmt.sensitive, *fmt.drop, *fmt.minmax_columns, *filter(None, [fmt.id_column]))
               if c not in table.columns]
    if missing:
        raise ValueError(f"{table_path}: missing column(s) {', '.join(missing)} named by the dataset's format "
                         f"(columns: {', '.join(map(str, table.columns[:12]))})")
    if not pd.api.types.is_numeric_dtype(table[fmt.sensitive]):  # German: Gender is 'Female'/'Male'; Female is the protected 1
        if fmt.protected_value is None:
            raise ValueError(f"{table_path}: sensitive column {fmt.sensitive!r} is text; name the value that is the "
                             "protected group with data.init_args.graph_format.protected_value")
        table[fmt.sensitive] = (table[fmt.sensitive].astype(str).str.lower() == fmt.protected_value.lower()).astype(int)
    labels = table[fmt.label].to_numpy().astype(np.int64)
    labels = np.where(labels == -1, 0, labels) if fmt.split != "labelled_half" else np.where(labels > 1, 1, labels)
    if set(np.unique(labels)) - {-1, 0, 1}:
        raise ValueError(f"{table_path}: label column {fmt.label!r} must be binary (0/1 or -1/1)")
    sensitive = table[fmt.sensitive].to_numpy().astype(np.int64)
    if fmt.split == "labelled_half":
        sensitive = np.where(sensitive > 1, 1, sensitive)  # NIFTY's Pokec coding keeps region in {0, 1}
    if set(np.unique(sensitive)) - {0, 1}:
        raise ValueError(f"{table_path.name}: sensitive column {fmt.sensitive!r} must be binary 0/1")
    feature_columns = [c for c in table.columns if c != fmt.label and c not in fmt.drop and c != fmt.id_column
                       and (fmt.sensitive_in_features or c != fmt.sensitive)]

    edge_path = _edge_file(fmt, folder)
    if edge_path is not None:
        edges = read_edge_file(edge_path)
    elif fmt.build_threshold is not None:
        edges = _built_edges(key, fmt, table[feature_columns], cache_root)
    else:
        raise _missing_files_error(name, fmt, data_root)
    if fmt.edge_ids == "id":  # edges name node ids: map them to row numbers
        row_of_id = pd.Series(np.arange(len(table)), index=table[fmt.id_column].to_numpy())
        edges = row_of_id.reindex(edges.reshape(-1)).to_numpy()
        if np.isnan(edges).any():
            raise ValueError(f"{edge_path}: edges name ids that are not in column {fmt.id_column!r} of {fmt.table_name}")
        edges = edges.astype(np.int64).reshape(-1, 2)

    split_folder = folder / "split"
    if (split_folder / "train_split.npy").is_file():  # RELIANT ships Bail's split as .npy ids
        split = tuple(np.load(split_folder / f"{part}_split.npy").astype(np.int64) for part in ("train", "val", "test"))
    else:
        rule = fmt.split if fmt.split != "labelled_half" else "labelled_half"
        split = official_split(np.where(table[fmt.label].to_numpy() < 0, -1, labels) if fmt.split == "labelled_half"
                               else labels, rule=rule, seed=fmt.split_seed, label_number=fmt.label_number)
    graph = Data(x=torch.from_numpy(_features(fmt, table, feature_columns)),
                 edge_index=graph_edge_index(edges, len(table)),
                 y=torch.from_numpy(np.clip(labels, 0, 1)), sensitive=torch.from_numpy(sensitive))
    return graph, dict(zip(("train", "val", "test"), split))


def verify_known_files(folder: Path, cache_root: Path) -> None:
    """The published NIFTY files in ``folder`` have their published md5 (checked once per version)."""
    known = {}
    for path in folder.iterdir():
        name = path.name.removesuffix(".gz")
        if path.is_file() and name in NIFTY_MD5:
            known[path] = NIFTY_MD5[name]
    verify_md5(known, cache_dir=cache_root, fix=GET_NIFTY)


def read_feature_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (ValueError, OSError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path} cannot be read as a NIFTY csv ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}); {GET_NIFTY}") from None


def _built_edges(key: str, fmt: FairDatasetFormat, feature_table: pd.DataFrame, cache_root: Path) -> np.ndarray:
    scaled = _scaled_for_edge_building(key, feature_table)
    digest = hashlib.sha1(np.ascontiguousarray(scaled.to_numpy()).tobytes()).hexdigest()[:12]
    path = cache_root / "fair_graphs" / f"{fmt.key}_edges_built-t{fmt.build_threshold}-{digest}.npy"
    with _exclusive_lock(path.with_suffix(".lock")):
        if not path.is_file():
            edges = similarity_edges(scaled.to_numpy(), fmt.build_threshold)
            temporary = path.with_suffix(".partial.npy")
            np.save(temporary, edges)
            temporary.rename(path)
    return np.load(path)


def source_fingerprint(name: str, data_root: Path | None, fmt: FairDatasetFormat | None = None) -> str:
    """A key of the source files (names, sizes, mtimes) and the format: the processed-graph cache
    is rebuilt when any of them changes."""
    key = resolve_dataset_key(name)
    fmt = fmt or resolve_format(name)
    folder = _find_table(fmt, data_root) if data_root is not None else None
    if folder is None:
        raise _missing_files_error(name, fmt, data_root)
    sources = [*folder.glob(f"{fmt.key}*"), folder / fmt.table_name, folder / fmt.edge_name,
               *(folder / "split").glob("*_split.npy")]
    stats = sorted({(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sources if p.is_file()})
    return hashlib.sha1(json.dumps([key, str(folder.resolve()), stats, repr(fmt)]).encode()).hexdigest()[:16]
