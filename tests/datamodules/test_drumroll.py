"""The MIDI <-> drumroll pipeline: hand-built cases, and the paper's own processed files."""

from __future__ import annotations

import csv
import json
import zipfile

import mido
import pretty_midi
import pytest

from datamodules.drumroll import (DrumrollTokenizer, drumroll_to_midi, generated_lines, is_well_formed_line,
                                  midi_to_drumroll, open_groove_zip, prompt_and_completion, read_info_csv,
                                  read_midi_from_zip, select_paper_files, sixteenth_step, strip_leading_silence)
from tests_support import shared_data_root


def _drum_file(notes: list[tuple[int, int]], *, numerator: int = 4, denominator: int = 4, tpb: int = 480) -> mido.MidiFile:
    """A type-0 GMD-like file with note-ons at (absolute tick, pitch)."""
    track = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator, time=0)])
    now = 0
    for tick, pitch in sorted(notes):
        track.append(mido.Message("note_on", channel=9, note=pitch, velocity=80, time=tick - now))
        track.append(mido.Message("note_on", channel=9, note=pitch, velocity=0, time=0))  # note-off: ignored
        now = tick
    midi = mido.MidiFile(type=0, ticks_per_beat=tpb)
    midi.tracks.append(track)
    return midi


def test_sixteenth_windows_match_hand_computed_boundaries() -> None:
    # tpb 480: step 0 = [0, 60), step k = [120k - 60, 120k + 60)
    assert [sixteenth_step(t, 480, 256) for t in (0, 59, 60, 179, 180, 120 * 255 + 59)] == [0, 0, 1, 1, 2, 255]
    assert sixteenth_step(120 * 255 + 60, 480, 256) == -1  # past the horizon
    assert sixteenth_step(27, 220, 256) == -1  # tpb 220: windows [0,27) and [28,82) leave tick 27 out


def test_midi_to_drumroll_merges_columns_drops_pedal_and_stops_outside() -> None:
    notes = [(0, 36), (0, 57), (120, 40), (240, 46), (250, 44), (360, 43), (480, 59), (120 * 256, 38)]
    lines = midi_to_drumroll(_drum_file(notes))
    assert len(lines) == 256
    # crash(57) + kick(36); rim shot 40 -> snare; open hat 46 -> hi-hat (pedal 44 dropped); floor tom 43 -> toms; ride bell 59
    assert lines[:5] == ["o--o--", "--o---", "----o-", "-----o", "-o----"]
    assert set(lines[5:]) == {"------"}  # the note past the horizon ended the file
    assert len(midi_to_drumroll(_drum_file([(0, 36)], numerator=3))) == 192  # 3/4 kept, 16 x 3 beats
    assert midi_to_drumroll(_drum_file([(0, 36)], numerator=6, denominator=8)) is None


def test_prompt_and_completion_strip_and_framing() -> None:
    groove = ["------"] * 16 + ["o-----", "------", "--o---"] + ["---o--"] * 141  # 144 lines after strip
    prompt, completion = prompt_and_completion(groove)
    assert strip_leading_silence(groove)[0] == "o-----"
    assert prompt.count("SEP\n") == 2 and prompt.endswith("---o--\nSEP\n") and prompt.startswith("o-----\n")
    assert completion.endswith("---o--\nEND") and completion.count("SEP") == 6  # 112 lines: SEP after 6 of 7 bars
    assert prompt_and_completion(["---o--"] * 128) is None  # "more than 128 lines" rule
    assert generated_lines(prompt + completion) == strip_leading_silence(groove)


def test_drumroll_to_midi_onsets_pitches_and_round_trip(tmp_path) -> None:
    lines = ["o--o--", "------", "--o-o-", "xx", "-----o"] + ["----o-"] * 251
    midi = drumroll_to_midi(lines)
    midi.save(tmp_path / "groove.mid")
    notes = sorted((round(note.start, 4), note.pitch) for note in pretty_midi.PrettyMIDI(str(tmp_path / "groove.mid")).instruments[0].notes)
    assert notes[:5] == [(0.0, 36), (0.0, 49), (0.25, 38), (0.25, 42), (0.5, 50)]  # 120 bpm: a line is 0.125 s
    # the malformed line 3 is a rest; merged to one track the file reads back to the same grid
    merged = mido.MidiFile(type=0, ticks_per_beat=midi.ticks_per_beat)
    merged.tracks.append(mido.merge_tracks(midi.tracks))
    assert midi_to_drumroll(merged) == [line if is_well_formed_line(line) else "------" for line in lines]


def test_tokenizer_round_trip_and_line_tokens() -> None:
    tokenizer = DrumrollTokenizer()
    assert len(tokenizer) == 3 + 64 + 96
    text = "o--o--\n------\nSEP\n--o---\nEND"
    tokens = tokenizer.encode_drumroll(text)
    assert len(tokens) == 5 and tokens[2] == tokenizer.sep_id and tokens[-1] == tokenizer.end_id
    assert tokenizer.decode(tokens) == text
    assert tokenizer.decode(tokenizer.encode_drumroll("oo\nEND")) == "oo\nEND"  # malformed lines fall back to characters
    assert tokenizer.decode(tokenizer.encode_text("Café\n")) == "Caf?\n"


@pytest.fixture(scope="module")
def paper_pipeline():
    root = shared_data_root("groove_midi/groove-midionly.zip") / "groove_midi"
    files = select_paper_files(read_info_csv(root / "info.csv"))
    with open_groove_zip(root / "groove-midionly.zip") as archive:
        texts = {groove.name: (groove, midi_to_drumroll(read_midi_from_zip(archive, groove.midi_filename)))
                 for groove in files}
    return root, files, texts


@pytest.mark.slow
def test_file_selection_is_the_papers_split(paper_pipeline) -> None:
    root, files, _ = paper_pipeline
    with (root / "drums_with_llm_split.csv").open() as handle:
        expected = {row["paper_file_name"].removesuffix(".mid"): (row["split"], row["groove_midi_filename"])
                    for row in csv.DictReader(handle)}
    assert {groove.name: groove.split for groove in files} == {name: split for name, (split, _) in expected.items()}
    # The split file matched files by content; GMD's drummer2/session2/{7,8}_rock_130 are byte-identical,
    # so it names 8_ for the paper's 2_7_rock_130: compare contents, not paths.
    with zipfile.ZipFile(root / "groove-midionly.zip") as archive:
        for groove in files:
            if groove.midi_filename != expected[groove.name][1]:
                assert archive.read(f"groove/{groove.midi_filename}") == archive.read(f"groove/{expected[groove.name][1]}")
    assert [sum(groove.split == split for groove in files) for split in ("train", "dev", "test")] == [378, 48, 37]


def test_pipeline_reproduces_the_papers_text_and_jsonl_files(paper_pipeline) -> None:
    root, _, texts = paper_pipeline
    with zipfile.ZipFile(root / "drums_with_llm_text.zip") as archive:
        paper_texts = {name: archive.read(name).decode() for name in archive.namelist() if name.endswith(".txt")}
        records = {split: [json.loads(line) for line in archive.read(f"gpt3_{split}.jsonl").decode().splitlines()]
                   for split in ("train", "dev", "test")}
    ours = {f"data_text/{groove.split}/{name}.txt": "".join(line + "\n" for line in lines)
            for name, (groove, lines) in texts.items() if lines is not None}
    assert len(ours) == 457 and ours == paper_texts  # 6 grooves not in x/4 skipped, every byte equal
    for split, split_records in records.items():
        assert len(split_records) == {"train": 372, "dev": 47, "test": 37}[split]
        for record in split_records:
            assert prompt_and_completion(texts[record["name"]][1]) == (record["prompt"], record["completion"])
