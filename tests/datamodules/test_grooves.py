"""GrooveDataModule: procedural generator structure, sharding, batches, and the real GMD split."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

import datamodules.grooves as grooves
from datamodules.drumroll import is_well_formed_line
from datamodules.grooves import (GrooveDataModule, ShardedSampler, collate_sequences, generate_procedural_corpus,
                                 generate_procedural_groove)
from tests_support import shared_data_root

CRASH, SNARE, TOMS = 0, 2, 5


def test_procedural_groove_structure_without_mutations(monkeypatch) -> None:
    monkeypatch.setattr(grooves, "MUTATION_RATE", 0.0)
    lines = generate_procedural_groove("rock", random.Random(3))
    bars = [lines[i:i + 16] for i in range(0, 256, 16)]
    assert len(lines) == 256 and all(map(is_well_formed_line, lines))
    assert [bar[0][CRASH] for bar in bars] == ["o" if b in (0, 4, 8, 12) else "-" for b in range(16)]
    for fill_bar in (3, 7, 11, 15):  # second half of bars 4, 8, 12, 16: toms / snare only
        assert all(line[c] == "-" for line in bars[fill_bar][8:] for c in range(6) if c not in (SNARE, TOMS))
    plain = {tuple(bar) for b, bar in enumerate(bars) if b not in (0, 3, 4, 7, 8, 11, 12, 15)}
    assert len(plain) <= 2  # the core bar and its variant
    assert "".join(line[4] for line in bars[1]) == "o-o-o-o-o-o-o-o-"  # rock: 8th-note hi-hat


def test_procedural_corpus_is_seeded_and_sized() -> None:
    first, second = generate_procedural_corpus((12, 6, 6), seed=5), generate_procedural_corpus((12, 6, 6), seed=5)
    assert first == second and [len(first[s]) for s in ("train", "dev", "test")] == [12, 6, 6]
    assert {name.split("_")[-1] for name, _ in first["train"]} == set(grooves.STYLE_TEMPLATES)
    assert generate_procedural_corpus((12, 6, 6), seed=6)["train"] != first["train"]


def test_two_shards_with_half_batches_are_the_one_process_batches() -> None:
    single = list(ShardedSampler(10, shuffle=True, seed=7, rank=0, world_size=1))
    ranks = [list(ShardedSampler(10, shuffle=True, seed=7, rank=r, world_size=2)) for r in (0, 1)]
    batch, half = 4, 2
    for start in range(0, 10, batch):
        merged = ranks[0][start // 2:start // 2 + half] + ranks[1][start // 2:start // 2 + half]
        assert sorted(merged) == sorted(single[start:start + batch])
    sampler = ShardedSampler(5, shuffle=False, seed=0, rank=1, world_size=2)
    assert list(sampler) == [1, 3] and len(sampler) == 2  # evaluation: no padding


def test_collate_pads_tokens_with_zero_weight() -> None:
    items = [{"tokens": torch.tensor([5, 6, 7]), "loss_weights": torch.tensor([0.01, 1.0, 1.0])},
             {"tokens": torch.tensor([8]), "loss_weights": torch.tensor([1.0])}]
    batch = collate_sequences(items)
    assert batch["tokens"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["loss_weights"][1].tolist() == [1.0, 0.0, 0.0]


def test_procedural_items_weights_and_english_blocks() -> None:
    datamodule = GrooveDataModule(procedural_sizes=(6, 2, 2), english_max_characters=5000, english_block_tokens=100)
    datamodule.setup()
    item = datamodule.sequence_items("train")[0]
    # prompt = 2 bars + 2 SEP = 34 tokens at weight 0.01; completion = 14 bars + 13 SEP + END = 238 at 1
    assert len(item["tokens"]) == 34 + 238 and item["tokens"][-1] == datamodule.tokenizer.end_id
    assert item["loss_weights"][:34].eq(0.01).all() and item["loss_weights"][34:].eq(1.0).all()
    blocks = datamodule.english_items()
    assert len(blocks) == 50 and all(len(block["tokens"]) == 100 for block in blocks)
    datamodule.trainer = SimpleNamespace(lightning_module=SimpleNamespace(training_corpus="english"), global_rank=0,
                                         world_size=1)
    assert len(datamodule.train_dataloader().dataset) == 50


def test_missing_gmd_files_name_what_to_get(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="info.csv and groove-midionly.zip"):
        GrooveDataModule(dataset="gmd-paper", data_dir=str(tmp_path)).prepare_data()
    with pytest.raises(ValueError, match="unknown groove dataset"):
        GrooveDataModule(dataset="nope").prepare_data()


@pytest.mark.slow
def test_gmd_paper_split_counts(tmp_path, request) -> None:
    data_root = shared_data_root("groove_midi/groove-midionly.zip")
    # The MIDI -> text result is cached across test sessions (pytest's cache dir, or this test's own
    # folder under -p no:cacheprovider); test_drumroll.py checks the uncached pipeline against the paper's own files.
    pytest_cache = getattr(request.config, "cache", None)
    cache = pytest_cache.mkdir("drum_lm_gmd") if pytest_cache is not None else tmp_path / "drum_lm_gmd"
    datamodule = GrooveDataModule(dataset="gmd-paper", data_dir=str(data_root), cache_dir=str(cache))
    datamodule.setup()
    assert [len(datamodule.grooves[s]) for s in ("train", "dev", "test")] == [373, 47, 37]  # text files
    assert [len(datamodule.sequence_items(s)) for s in ("train", "dev", "test")] == [372, 47, 37]  # jsonl records
    test_items = datamodule.generation_items("test")
    assert {len(item["prompt_tokens"]) for item in test_items} == {34}
    assert [item["index"] for item in test_items] == list(range(37))
    assert {len(item["gold_lines"]) for item in test_items} == {256}  # the 37 test grooves are all 4/4


@pytest.mark.parametrize("damage", ["rename a column of info.csv", "replace the zip with text", "truncate the zip"])
def test_damaged_gmd_files_stop_prepare_data_with_one_line(tmp_path, damage: str) -> None:
    """What used to fail inside a run (a renamed info.csv column, a non-zip archive) stops in the
    pre-run check, even when an earlier parse is cached: the release md5s are verified first."""
    import shutil

    source = shared_data_root("groove_midi/groove-midionly.zip") / "groove_midi"
    folder = tmp_path / "groove_midi"
    folder.mkdir()
    for name in ("info.csv", "groove-midionly.zip"):
        shutil.copyfile(source / name, folder / name)
    if damage.startswith("rename"):
        text = (folder / "info.csv").read_text()
        (folder / "info.csv").write_text(text.replace("midi_filename", "midi_file", 1))
        damaged = "info.csv"
    elif damage.startswith("replace"):
        (folder / "groove-midionly.zip").write_text("not a zip")
        damaged = "groove-midionly.zip"
    else:
        data = (folder / "groove-midionly.zip").read_bytes()
        (folder / "groove-midionly.zip").write_bytes(data[: len(data) // 3])
        damaged = "groove-midionly.zip"
    with pytest.raises(ValueError) as error:
        GrooveDataModule(dataset="gmd-paper", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache")).prepare_data()
    message = str(error.value)
    assert "\n" not in message and damaged in message and "magenta.tensorflow.org" in message


def test_midi_folder_reads_a_multi_track_file_like_gmd(tmp_path) -> None:
    """A DAW-style file (meta track + drum track + a melodic track on another channel) reads as the
    drum lines it holds: the melodic notes are dropped, the timing of the drums is kept."""
    import mido

    from datamodules.drumroll import drumroll_to_midi, midi_to_drumroll

    lines = generate_procedural_groove("funk", random.Random(1))
    midi = drumroll_to_midi(lines)
    piano = mido.MidiTrack([mido.Message("note_on", channel=0, note=38, velocity=90, time=60),
                            mido.Message("note_on", channel=0, note=38, velocity=0, time=500)])
    midi.tracks.append(piano)
    assert midi_to_drumroll(grooves.drum_track_only(midi)) == lines
    for split in ("train", "dev", "test"):
        (tmp_path / "mine" / split).mkdir(parents=True)
        midi.save(tmp_path / "mine" / split / "a.mid")
    datamodule = GrooveDataModule("mine", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    datamodule.setup()
    assert datamodule.grooves["test"] == [("a", lines)]
    with pytest.raises(FileNotFoundError, match="missing dev, test"):
        (tmp_path / "half" / "train").mkdir(parents=True)
        GrooveDataModule("half", data_dir=str(tmp_path)).prepare_data()
