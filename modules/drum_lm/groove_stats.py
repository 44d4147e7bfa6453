"""Structural statistics of drum grooves in the drumroll format (``analysis.py`` of
``zharry29/drums-with-llm``, defined here by formula; see ``papers/drum_lm.md``).

* **Measures.** The text's lines (each keeping its newline, as ``readlines`` gives them) are cut
  into blocks of 16 and each block is joined with one more ``"\\n"``; the first 16 blocks are the
  measures m_0..m_15 (a short last block is kept, as in the official code).
* **Stability.** s_i = min(Lev(m_i, m_{i-1}), Lev(m_i, m_{i+1})) for i = 1..len-2 (14 values for a
  16-bar groove), Lev = character-level Levenshtein distance. Low = repetition, spikes = variation.
* **Two-means.** sklearn ``KMeans(n_clusters=2, random_state=0, n_init=10)`` on one groove's s
  values (n_init=10 was sklearn's default when the paper was written). From it, **centre gap**
  |c_1 - c_2| (the official ``intra``) and **cluster spread** mean_i |s_i - c_label(i)| (``inter``).
* **Corpus statistics.** ``mean_stability`` pools every s of every groove; ``centre_gap`` and
  ``cluster_spread`` average the per-groove values; ``pure_repetition_rate`` is the fraction of
  grooves whose s values are all 0 (the spec's definition); ``repeated_measure_rate`` is the same
  test per measure: the fraction of all pooled s values that are 0 (a measure identical to one of
  its neighbours). A sampled continuation of ~200 lines is a pure repetition only if every one of
  its lines copies the bar before, so a model that is not near-deterministic scores 0 on the groove
  rate however much it repeats; the per-measure rate resolves that (the human test grooves: ~0.05
  pure repetition, ~0.30 repeated measures).
* **Distance to human** (the Drum LM claim's metric): the L1 distance between a system's corpus
  triple (mean_stability, centre_gap, cluster_spread) and the human test set's triple computed on
  the same grooves: |Δ mean s| + |Δ gap| + |Δ spread|. 0 means the human structure statistics.

``GrooveStructureMetric`` accumulates per-groove rows keyed by the groove's index in the test set,
so under DDP every rank's grooves are gathered and a groove seen twice (a padded sampler) counts
once; the corpus statistics are computed from the gathered rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from rapidfuzz.distance import Levenshtein
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

LINES_PER_MEASURE = 16
MAX_MEASURES = 16
STATISTIC_NAMES = ("mean_stability", "centre_gap", "cluster_spread")


def levenshtein_distance(first: str, second: str) -> int:
    """Character edit distance (insert, delete, substitute each cost 1), by rapidfuzz (C++): the
    official pure-Python loop gives the same distances, far more slowly."""
    return Levenshtein.distance(first, second)


def measures_of(lines: list[str]) -> list[str]:
    """The official measure strings of a groove given as lines without newlines."""
    with_newlines = [line + "\n" for line in lines]
    blocks = ["\n".join(with_newlines[start:start + LINES_PER_MEASURE])
              for start in range(0, len(with_newlines), LINES_PER_MEASURE)]
    return blocks[:MAX_MEASURES]


def measure_stabilities(lines: list[str]) -> list[int]:
    measures = measures_of(lines)
    neighbour_distance = [levenshtein_distance(measures[i], measures[i + 1]) for i in range(len(measures) - 1)]
    return [min(neighbour_distance[i - 1], neighbour_distance[i]) for i in range(1, len(measures) - 1)]


def centre_gap_and_spread(stabilities: list[int]) -> tuple[float, float]:
    """(|c_1 - c_2|, mean |s_i - c_label(i)|) of 2-means on the s values; NaN for < 2 values."""
    if len(stabilities) < 2:
        return float("nan"), float("nan")
    values = np.asarray(stabilities, dtype=np.float64).reshape(-1, 1)
    # One BLAS thread: for 14 points the thread pool's start-up costs 10x the clustering itself.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # all-equal values (pure repetition)
        kmeans = KMeans(n_clusters=2, random_state=0, n_init=10).fit(values)
    centres = kmeans.cluster_centers_[:, 0]
    spread = float(np.mean(np.abs(values[:, 0] - centres[kmeans.labels_])))
    return float(abs(centres[0] - centres[1])), spread


@dataclass(frozen=True)
class GrooveStructure:
    """One groove's stability values and two-means statistics."""

    stabilities: tuple[int, ...]
    centre_gap: float
    cluster_spread: float

    @classmethod
    def of_lines(cls, lines: list[str]) -> "GrooveStructure":
        stabilities = measure_stabilities(lines)
        gap, spread = centre_gap_and_spread(stabilities)
        return cls(stabilities=tuple(stabilities), centre_gap=gap, cluster_spread=spread)

    @property
    def is_pure_repetition(self) -> bool:
        return len(self.stabilities) > 0 and all(value == 0 for value in self.stabilities)


def corpus_statistics(grooves: list[GrooveStructure]) -> dict[str, float]:
    pooled = [value for groove in grooves for value in groove.stabilities]
    return {
        "mean_stability": float(np.mean(pooled)) if pooled else float("nan"),
        "centre_gap": float(np.nanmean([g.centre_gap for g in grooves])) if grooves else float("nan"),
        "cluster_spread": float(np.nanmean([g.cluster_spread for g in grooves])) if grooves else float("nan"),
        "pure_repetition_rate": float(np.mean([g.is_pure_repetition for g in grooves])) if grooves else float("nan"),
        "repeated_measure_rate": float(np.mean([value == 0 for value in pooled])) if pooled else float("nan"),
    }


def human_stat_distance(system: dict[str, float], human: dict[str, float]) -> float:
    """L1 distance between two corpus (mean_stability, centre_gap, cluster_spread) triples."""
    return float(sum(abs(system[name] - human[name]) for name in STATISTIC_NAMES))


# Per-groove row layout accumulated by the metric.
ROW_FIELDS = ("stability_sum", "stability_count", "zero_stability_count", "centre_gap", "cluster_spread",
              "pure_repetition", "human_stability_sum", "human_stability_count", "human_centre_gap",
              "human_cluster_spread", "well_formed_lines", "generated_lines", "ended")


class GrooveStructureMetric(Metric):
    """DDP-safe corpus statistics of a system's grooves next to the human grooves they continue."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def update(self, indices: torch.Tensor, rows: torch.Tensor) -> None:
        self.indices.append(indices.to(self.device, torch.long).reshape(-1))
        self.rows.append(rows.to(self.device, torch.float64).reshape(-1, len(ROW_FIELDS)))

    @staticmethod
    def row(system: GrooveStructure, human: GrooveStructure, *, well_formed_lines: int, generated_lines: int,
            ended: bool) -> list[float]:
        """One groove's row (the caller passes its index beside it to ``update``)."""
        return [sum(system.stabilities), len(system.stabilities), system.stabilities.count(0), system.centre_gap,
                system.cluster_spread,
                float(system.is_pure_repetition), sum(human.stabilities), len(human.stabilities),
                human.centre_gap, human.cluster_spread, well_formed_lines, generated_lines, float(ended)]

    def compute(self) -> dict[str, torch.Tensor]:
        indices, rows = dim_zero_cat(self.indices).cpu().numpy(), dim_zero_cat(self.rows).cpu().numpy()
        _, first = np.unique(indices, return_index=True)  # each groove once, whatever the sampler did
        table = dict(zip(ROW_FIELDS, rows[first].T))
        system = {"mean_stability": table["stability_sum"].sum() / max(table["stability_count"].sum(), 1),
                  "centre_gap": np.nanmean(table["centre_gap"]), "cluster_spread": np.nanmean(table["cluster_spread"])}
        human = {"mean_stability": table["human_stability_sum"].sum() / max(table["human_stability_count"].sum(), 1),
                 "centre_gap": np.nanmean(table["human_centre_gap"]),
                 "cluster_spread": np.nanmean(table["human_cluster_spread"])}
        values = {**system, "pure_repetition_rate": table["pure_repetition"].mean(),
                  "repeated_measure_rate": table["zero_stability_count"].sum() / max(table["stability_count"].sum(), 1),
                  "human_stat_distance": human_stat_distance(system, human),
                  "well_formed_rate": table["well_formed_lines"].sum() / max(table["generated_lines"].sum(), 1),
                  "generated_bars": table["generated_lines"].mean() / LINES_PER_MEASURE,
                  "ended_rate": table["ended"].mean(), "num_grooves": float(len(first))}
        return {name: torch.tensor(float(value), dtype=torch.float64) for name, value in values.items()}
