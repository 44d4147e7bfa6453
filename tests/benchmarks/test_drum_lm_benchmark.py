"""The Drum LM benchmark through the real CLI: the smoke profile end to end (references checked
against statistics recomputed here), and the scratch LM under 2-process DDP against 1 process."""

from __future__ import annotations

import os
from pathlib import Path

import mido
import pytest

from benchmarks.cli import main
from datamodules.drumroll import midi_to_drumroll
from datamodules.grooves import generate_procedural_corpus
from leaderboard.records import read_record
from modules.drum_lm.groove_stats import GrooveStructure, corpus_statistics
from modules.drum_lm import random_reference_grooves
from tests_support import run_ddp_cli

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

SMOKE = ["--profile", "smoke", "--wandb", "disabled"]
SMOKE_SIZES, SMOKE_SEED = (32, 8, 6), 0  # benchmarks/specs/drum_lm.yaml smoke profile
STATS = ("mean_stability", "centre_gap", "cluster_spread")


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("drum_lm_smoke")
    os.environ["LITBENCH_NUM_THREADS"] = "1"  # 2 threads on 2 busy cores are ~10x slower here
    try:
        assert main(["run", "drum_lm", *SMOKE, "--results", str(results)]) == 0
    finally:
        os.environ.pop("LITBENCH_NUM_THREADS")
    return results


def _record(results: Path, method: str):
    return read_record(results / f"drum_lm/procedural-grooves/{method}/smoke/seed-0.json")


def test_smoke_references_match_statistics_recomputed_here(smoke_results: Path) -> None:
    gold = [lines for _, lines in generate_procedural_corpus(SMOKE_SIZES, SMOKE_SEED)["test"]]
    human = corpus_statistics([GrooveStructure.of_lines(lines) for lines in gold])
    randoms = corpus_statistics([GrooveStructure.of_lines(lines) for lines in random_reference_grooves(len(gold))])
    records = {method: _record(smoke_results, method)
               for method in ("human", "random", "repeat", "pretrained", "pretrained_fresh_drum_tokens", "scratch")}
    assert all(record.ok for record in records.values())
    for name in STATS:
        assert records["human"].metrics[name] == pytest.approx(human[name], rel=1e-6)
        assert records["random"].metrics[name] == pytest.approx(randoms[name], rel=1e-6)
        assert records["repeat"].metrics[name] == 0.0
    assert records["human"].metrics["human_stat_distance"] == pytest.approx(0.0, abs=1e-6)
    assert records["repeat"].metrics["pure_repetition_rate"] == 1.0
    assert records["repeat"].metrics["repeated_measure_rate"] == 1.0
    assert records["human"].metrics["repeated_measure_rate"] == pytest.approx(human["repeated_measure_rate"], rel=1e-6)
    assert records["repeat"].metrics["human_stat_distance"] == pytest.approx(sum(human[name] for name in STATS), rel=1e-6)
    for method in ("pretrained", "pretrained_fresh_drum_tokens", "scratch"):
        metrics = records[method].metrics
        assert metrics["num_grooves"] == 6 and 0.0 <= metrics["well_formed_rate"] <= 1.0
        assert metrics["dev_perplexity"] < 163  # below the uniform guess over the 163-token vocabulary
    # run artifacts: 4 grooves as MIDI + text; the human ones read back to the gold grid
    for method in ("pretrained", "human"):
        assert sorted(Path(a).suffix for a in records[method].artifacts) == [".mid"] * 4 + [".txt"] * 4
    for artifact in (a for a in records["human"].artifacts if a.endswith(".mid")):
        midi = mido.MidiFile(smoke_results / artifact)
        merged = mido.MidiFile(type=0, ticks_per_beat=midi.ticks_per_beat)
        merged.tracks.append(mido.merge_tracks(midi.tracks))
        assert midi_to_drumroll(merged) == (smoke_results / artifact).with_suffix(".txt").read_text().splitlines()
    stage = records["pretrained"].stages["english_pretraining"]
    assert not stage["cache_hit"] and Path(stage["artifact"]).is_file()
    # one English model per seed, shared by the pretrained arms of that seed
    assert records["pretrained_fresh_drum_tokens"].stages["english_pretraining"]["artifact"] == stage["artifact"]
    assert not records["scratch"].stages


@pytest.mark.ddp
def test_smoke_ddp_matches_one_process(smoke_results: Path, tmp_path: Path) -> None:
    ddp = tmp_path / "ddp"
    run_ddp_cli("drum_lm", [*SMOKE, "--methods", "scratch"], results=ddp, timeout=400, threads=1)
    one, two = _record(smoke_results, "scratch"), _record(ddp, "scratch")
    assert one.hardware["world_size"] == 1 and two.hardware["world_size"] == 2
    assert set(one.metrics) == set(two.metrics) and two.metrics["num_grooves"] == 6
    # Each rank trains on half of every one-process batch and the loss is a mean over grooves, so
    # the weights agree up to float reduction order; the dev perplexity to 0.1%. Each groove samples
    # from its own seeded generator, so the generations agree unless a last-digit logit difference
    # flips a draw: statistics within 0.5 (a flipped groove moves them by more).
    assert two.metrics["dev_perplexity"] == pytest.approx(one.metrics["dev_perplexity"], rel=1e-3)
    for name in STATS:
        assert two.metrics[name] == pytest.approx(one.metrics[name], abs=0.5), name
