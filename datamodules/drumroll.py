"""The "drumroll" text format of Zhang & Callison-Burch, "Language Models are Drummers" (arXiv
2301.01162; code ``zharry29/drums-with-llm``, ``source/``): Groove MIDI -> text -> MIDI, and the
token vocabulary the Drum LM benchmark's small GPT reads it with.

Pipeline, as the official scripts do it (see ``papers/drum_lm.md``):

1. ``select_paper_files`` (``compile_midi.py``): GMD performances with ``beat_type == "beat"`` from
   ``drummer{1..10}/session{1..3}`` (``eval_session`` excluded unless asked), named
   ``{drummer number}_{basename}``, split by ``info.csv``'s ``split`` (validation -> dev).
2. ``midi_to_drumroll`` (``midi_to_text.py``, mido, track 0): the *last* time signature decides;
   a denominator other than 4 skips the file (3/4 and 5/4 are kept). The horizon is 16 x numerator
   beats (16 "bars"; 256 sixteenths for 4/4). A note-on with velocity > 0 at absolute tick T goes to
   step 0 when T < tpb/8 and to step k >= 1 when T is in [k*tpb/4 - tpb/8, k*tpb/4 + tpb/8); the first note-on outside every
   window ends the file. (An older ``midi_to_text.py`` in the repo history read track 1, used
   another column order and skipped files shorter than the horizon; the released text files were
   not made by it: this module reproduces all 457 of them byte for byte.)
3. Pitches merged into 6 columns (crash, ride, snare, kick, hi-hat, toms); 44, 54, 56, 39 dropped.
4. One line per sixteenth: 6 characters from {o, -}.
5. ``prompt_and_completion`` (``text_to_data.py``): while the first 4 lines are rests drop 16
   lines; keep the groove only when more than 128 lines remain; prompt = 2 bars with ``SEP`` after
   every 16 lines; completion = the rest with ``SEP`` every 16 lines, the *characters* S, E, P and
   newline stripped from both ends (``str.strip('SEP\\n')``), then ``\\nEND``.
6. ``drumroll_to_midi`` (``text_to_midi.py``): 480 ticks per beat, 120 ticks per line, 120 bpm,
   4/4, channel 10, velocity 100, column i -> pitch (49, 51, 38, 36, 42, 50)[i]. The official code
   raises IndexError for a hit beyond column 6 and the file is skipped; here such lines are
   rejected up front (``is_well_formed_line``) and written as rests, and every hit gets a note-off
   60 ticks later (the official files have none).

``DrumrollTokenizer`` is the vocabulary of the benchmark's models: one token per printable ASCII
character (for English pretraining text and for anything a model emits outside the drum format),
one token per possible drum line (all 2^6 = 64 ``o``/``-`` patterns, newline included), and one
token each for ``SEP\\n`` and ``END``. A 16-bar groove is therefore ~272 tokens instead of ~1,900
characters, which is what makes a 512-token context and CPU training possible. GPT-3's BPE splits a
drum line into ~2-4 tokens that are rare in English; here the line tokens never occur in English at
all, so what pretraining can transfer is the network, not the embeddings of drum tokens.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import mido

HIT, REST = "o", "-"
LINES_PER_BAR = 16
NUM_COLUMNS = 6
SEPARATOR_LINE = "SEP\n"
END_MARK = "END"
PROMPT_BARS = 2
HORIZON_BARS, SIXTEENTHS_PER_BEAT = 16, 4
MIN_LINES_AFTER_STRIP = 128  # the official ``len(score) > 128``

# Column order of the released text files; the official merge folds these pitches into each column.
COLUMN_NAMES = ("crash", "ride", "snare", "kick", "hi-hat", "toms")
COLUMN_SOURCE_PITCHES = (
    (49, 55, 57, 52),          # crash
    (51, 53, 59),              # ride
    (38, 40, 37),              # snare
    (36,),                     # kick
    (42, 46, 22, 26),          # hi-hat
    (50, 48, 47, 45, 43, 58),  # toms
)
COLUMN_OUTPUT_PITCHES = (49, 51, 38, 36, 42, 50)  # text_to_midi.py's ``primary_notes`` order
PITCH_TO_COLUMN = {pitch: column for column, pitches in enumerate(COLUMN_SOURCE_PITCHES) for pitch in pitches}

WELL_FORMED_LINE = re.compile(r"[o-]{6}")
GROOVE_ZIP = "groove-midionly.zip"
INFO_CSV = "info.csv"
PAPER_TEXT_ZIP = "drums_with_llm_text.zip"
SPLIT_NAMES = {"train": "train", "validation": "dev", "test": "test"}
# md5 of the Groove MIDI Dataset v1.0.0 MIDI-only release (the zip, and its info.csv unzipped).
GMD_MD5 = {GROOVE_ZIP: "2100a9c9791897e319d1330906a04f14", INFO_CSV: "5f14e98b575734088056ba8d81e34b01"}
GET_GMD = ("get the Groove MIDI Dataset v1.0.0 MIDI-only zip from "
           "https://magenta.tensorflow.org/datasets/groove (see ../shared/data/groove_midi/SOURCE.md)")


# ----------------------------------------------------------------------------------------------
# File selection
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GrooveFile:
    name: str            # the paper's name: "{drummer number}_{basename without .mid}"
    split: str           # train | dev | test
    midi_filename: str   # path inside GMD, e.g. "drummer1/session1/1_funk_80_beat_4-4.mid"
    time_signature: str  # info.csv's, e.g. "4-4"


def read_info_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"expected {path} (GMD's info.csv); {GET_GMD}")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    required = {"drummer", "session", "beat_type", "time_signature", "midi_filename", "split"}
    if not rows or not required <= set(rows[0]):
        raise ValueError(f"{path} is not GMD's info.csv (needs columns {', '.join(sorted(required))}); {GET_GMD}")
    return rows


def select_paper_files(info_rows: Iterable[dict[str, str]], *, include_eval_session: bool = False) -> list[GrooveFile]:
    """The official file selection (beats only, sessions 1-3), sorted by name for determinism."""
    selected = []
    for row in info_rows:
        session = row["session"].split("/")[-1]
        if row["beat_type"] != "beat" or (session == "eval_session" and not include_eval_session):
            continue
        drummer_number = row["drummer"].removeprefix("drummer")
        basename = Path(row["midi_filename"]).name.removesuffix(".mid")
        selected.append(GrooveFile(name=f"{drummer_number}_{basename}", split=SPLIT_NAMES[row["split"]],
                                   midi_filename=row["midi_filename"], time_signature=row["time_signature"]))
    return sorted(selected, key=lambda groove: groove.name)


def open_groove_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise FileNotFoundError(f"expected {path}; {GET_GMD}")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a readable zip; {GET_GMD}") from None


def read_midi_from_zip(archive: zipfile.ZipFile, midi_filename: str) -> mido.MidiFile:
    try:
        payload = archive.read(f"groove/{midi_filename}")
    except KeyError:
        raise FileNotFoundError(f"groove/{midi_filename} is missing from {archive.filename}; {GET_GMD}") from None
    return mido.MidiFile(file=io.BytesIO(payload), clip=True)


# ----------------------------------------------------------------------------------------------
# MIDI -> drumroll lines
# ----------------------------------------------------------------------------------------------
def sixteenth_step(tick: int, ticks_per_beat: int, num_steps: int) -> int:
    """``quantize`` of midi_to_text.py: the step whose window holds ``tick``, or -1 for none."""
    quarter, half_window = int(ticks_per_beat / 4), int(ticks_per_beat / 8)
    if tick < half_window:
        return 0
    step = (tick - (quarter - half_window)) // quarter + 1
    # Windows are [k*q - h, k*q + h); for ticks_per_beat not divisible by 8 they leave gaps.
    if 1 <= step < num_steps and step * quarter - half_window <= tick < step * quarter + half_window:
        return step
    return -1


def midi_to_drumroll(midi: mido.MidiFile) -> list[str] | None:
    """Lines (without newlines) of one performance (always the full horizon; a short performance
    ends in rests), or None when the time signature is not x/4 (the official script writes none)."""
    track = midi.tracks[0]
    numerator, denominator = 0, 0
    for message in track:
        if message.type == "time_signature":
            numerator, denominator = message.numerator, message.denominator
    if denominator != 4:
        return None
    num_steps = HORIZON_BARS * numerator * SIXTEENTHS_PER_BEAT
    grid = [[REST] * NUM_COLUMNS for _ in range(num_steps)]
    absolute_tick = 0
    for message in track:
        absolute_tick += message.time
        if message.type == "note_on" and message.velocity > 0:
            step = sixteenth_step(absolute_tick, midi.ticks_per_beat, num_steps)
            if step == -1:
                break
            column = PITCH_TO_COLUMN.get(message.note)
            if column is not None:
                grid[step][column] = HIT
    return ["".join(row) for row in grid]


# ----------------------------------------------------------------------------------------------
# Lines -> prompt / completion
# ----------------------------------------------------------------------------------------------
def strip_leading_silence(lines: list[str]) -> list[str]:
    """``strip_empty_measure``: while the first quarter note is silent, drop a whole bar."""
    while len(lines) >= 4 and all(line == REST * NUM_COLUMNS for line in lines[:4]):
        lines = lines[LINES_PER_BAR:]
    return lines


def with_separators(lines: list[str]) -> str:
    """Lines joined with newlines and ``SEP`` after every complete bar (``add_separator``)."""
    text = []
    for index, line in enumerate(lines, start=1):
        text.append(line + "\n")
        if index % LINES_PER_BAR == 0:
            text.append(SEPARATOR_LINE)
    return "".join(text)


def prompt_and_completion(lines: list[str]) -> tuple[str, str] | None:
    """The jsonl prompt/completion of one groove, or None when too short after stripping."""
    lines = strip_leading_silence(lines)
    if len(lines) <= MIN_LINES_AFTER_STRIP:
        return None
    prompt_lines = PROMPT_BARS * LINES_PER_BAR
    completion = with_separators(lines[prompt_lines:]).strip("SEP\n") + "\n" + END_MARK
    return with_separators(lines[:prompt_lines]), completion


def generated_lines(text: str) -> list[str]:
    """The drum lines of prompt + generation, as ``evaluate.py`` writes them: cut at ``END``,
    every ``SEP`` line removed, empty lines dropped."""
    text = text.split(END_MARK, 1)[0].replace(SEPARATOR_LINE, "")
    return [line for line in text.split("\n") if line and line != "SEP"]


def is_well_formed_line(line: str) -> bool:
    return WELL_FORMED_LINE.fullmatch(line) is not None


# ----------------------------------------------------------------------------------------------
# Drumroll -> MIDI
# ----------------------------------------------------------------------------------------------
TICKS_PER_BEAT, TICKS_PER_LINE, TEMPO_US_PER_BEAT, DRUM_CHANNEL, VELOCITY = 480, 120, 500_000, 9, 100


def drumroll_to_midi(lines: list[str]) -> mido.MidiFile:
    """``convert_to_midi`` of text_to_midi.py: line j's hits sound at tick 120*j. Two deviations:
    malformed lines are played as rests (the official code crashes or plays their first 6
    characters), and every hit gets a note-off half a line later (the official stream has none, so
    pretty_midi and some players see no notes at all)."""
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    meta, drums = mido.MidiTrack(), mido.MidiTrack()
    midi.tracks.extend([meta, drums])
    meta.append(mido.MetaMessage("set_tempo", tempo=TEMPO_US_PER_BEAT, time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, clocks_per_click=24,
                                 notated_32nd_notes_per_beat=8, time=0))
    meta.append(mido.MetaMessage("key_signature", key="C", time=0))
    meta.append(mido.MetaMessage("end_of_track", time=1))
    drums.append(mido.Message("program_change", channel=DRUM_CHANNEL, program=0, time=0))
    events = []  # (absolute tick, 0 = off before 1 = on at the same tick, pitch, velocity)
    for line_index, line in enumerate(lines):
        if is_well_formed_line(line):
            for column, char in enumerate(line):
                if char == HIT:
                    onset = line_index * TICKS_PER_LINE
                    events += [(onset, 1, COLUMN_OUTPUT_PITCHES[column], VELOCITY),
                               (onset + TICKS_PER_LINE // 2, 0, COLUMN_OUTPUT_PITCHES[column], 0)]
    last_tick = 0
    for tick, _, pitch, velocity in sorted(events):
        drums.append(mido.Message("note_on", channel=DRUM_CHANNEL, note=pitch, velocity=velocity, time=tick - last_tick))
        last_tick = tick
    drums.append(mido.MetaMessage("end_of_track", time=max(len(lines) * TICKS_PER_LINE - last_tick, 0)))
    return midi


# ----------------------------------------------------------------------------------------------
# Token vocabulary
# ----------------------------------------------------------------------------------------------
class DrumrollTokenizer:
    """Characters + whole drum lines + ``SEP`` + ``END`` (+ padding); see the module docstring."""

    def __init__(self) -> None:
        characters = ["\n"] + [chr(code) for code in range(32, 127)]
        drum_lines = ["".join(bits) + "\n" for bits in itertools.product(REST + HIT, repeat=NUM_COLUMNS)]
        self.pieces: list[str] = ["<pad>", SEPARATOR_LINE, END_MARK] + drum_lines + characters
        self.pad_id, self.sep_id, self.end_id = 0, 1, 2
        self.index = {piece: token for token, piece in enumerate(self.pieces)}
        self.char_offset = 3 + len(drum_lines)
        self.unknown_char_id = self.index["?"]

    def __len__(self) -> int:
        return len(self.pieces)

    def encode_text(self, text: str) -> list[int]:
        """Plain text, one token per character (non-ASCII characters become '?')."""
        return [self.index.get(char, self.unknown_char_id) for char in text]

    def encode_drumroll(self, text: str) -> list[int]:
        """Drumroll text (lines, ``SEP`` lines, a final ``END``): whole-line tokens where the text
        allows, characters for anything else."""
        tokens: list[int] = []
        for piece in re.split(r"(?<=\n)", text):
            if not piece:
                continue
            if piece in self.index and (piece.endswith("\n") or piece == END_MARK):
                tokens.append(self.index[piece])
            elif piece.endswith(END_MARK) and piece != END_MARK:
                tokens.extend(self.encode_text(piece[: -len(END_MARK)]))
                tokens.append(self.end_id)
            else:
                tokens.extend(self.encode_text(piece))
        return tokens

    def decode(self, tokens: Iterable[int]) -> str:
        return "".join(self.pieces[token] for token in tokens if token != self.pad_id)
