"""Drum grooves as drumroll text (``datamodules/drumroll.py``) for the Drum LM benchmark.

``GrooveDataModule`` picks its source by ``dataset``:

* ``"gmd-paper"`` — the real Groove MIDI Dataset in the paper's split, read from
  ``<data_dir>/groove_midi/{info.csv, groove-midionly.zip}`` (or ``<data_dir>/`` itself): the
  official file selection, MIDI -> drumroll and prompt/completion pipeline, giving 372 train /
  47 dev / 37 test grooves (463 files; 6 not in x/4 and one too short after stripping are dropped).
  ``include_eval_session=True`` adds GMD's 40 ``eval_session`` beats (not in the paper).
* **any other name** — a MIDI folder of your own: ``midi_folder`` (default ``<data_dir>/<name>/``;
  a relative path is under ``<data_dir>``) holding ``train/``, ``dev/`` (or ``validation/``) and
  ``test/`` subfolders of drum ``.mid`` / ``.midi`` files (searched recursively, sorted by path),
  each turned into drumroll text by the same pipeline as GMD (``midi_to_drumroll``: General MIDI
  drum pitches, x/4 time; other files are skipped, as GMD's are) after ``drum_track_only`` merges
  a multi-track file into one track of its channel-10 notes. Parsed once and cached in the
  cache dir, keyed by the files' paths, sizes and mtimes.
* ``"procedural-grooves"`` (default; needs no files) — ``generate_procedural_groove``: six style
  templates (rock 8ths, funk 16ths with ghost snares, shuffle ride with triplets on the 16th grid,
  half-time hip-hop, disco open hats, samba kick ostinato); per groove a core 1-bar pattern, a
  variant bar every 2 or 4 bars, a tom/snare fill in the second half of bars 4, 8, 12 and 16, a
  crash on bar 1 and after each fill, and 3% of the steps with one random hit toggled. Sizes
  ``procedural_sizes`` (train, dev, test); the generator seed ``procedural_seed`` does not follow
  the run seed, so every seed sees the same data. 16 bars per groove, as GMD.

Batches. ``train_dataloader`` yields ``{"tokens", "loss_weights"}`` (prompt + completion tokens,
weight 1 on completion targets and ``prompt_loss_weight`` on prompt targets, 0 on padding).
``test_dataloader`` returns two loaders: 0 = the test grooves for generation
(``{"index", "prompt_tokens", "gold_lines", "name"}``; ``gold_lines`` is the *unstripped* text, the
paper's human reference) and 1 = the dev grooves as training-style batches plus
``completion_mask`` (dev perplexity).

English pretraining text. A LightningModule with ``training_corpus = "english"`` (the pretraining
stage) gets, from ``train_dataloader``, blocks of ``english_block_tokens`` characters of English
from CPython's own documentation — ``pydoc_data.topics`` (~465 kB) plus the docstrings of a fixed
list of stdlib modules (``inspect.getdoc``) — so the stage trains on the run's datamodule without
downloading anything. It follows the installed Python, so the text (and the stage cache key's
meaning) is fixed per Python version.

Sharding. Every loader shards itself by ``trainer.global_rank`` / ``world_size`` (the spec sets
``use_distributed_sampler: false``): training takes ``permutation[rank::world]`` of one seeded
permutation per epoch, so two ranks with half the batch see exactly the batches of one process;
evaluation takes ``range(rank, n, world)`` without padding.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import mido
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.drumroll import (DrumrollTokenizer, LINES_PER_BAR, NUM_COLUMNS, HIT, REST, GET_GMD, GMD_MD5, GROOVE_ZIP,
                                  INFO_CSV, MIN_LINES_AFTER_STRIP, midi_to_drumroll, open_groove_zip,
                                  prompt_and_completion, read_info_csv, read_midi_from_zip, select_paper_files)
from datamodules.formats import DatasetFormat
from datamodules.integrity import verify_md5
from datamodules.loaders import loader_options

GMD_DATASET, PROCEDURAL_DATASET = "gmd-paper", "procedural-grooves"
PRESETS = (GMD_DATASET, PROCEDURAL_DATASET)  # any other name is a MIDI folder
SPLITS = ("train", "dev", "test")
SPLIT_FOLDERS = {"train": ("train",), "dev": ("dev", "validation", "val"), "test": ("test",)}
MIDI_SUFFIXES = (".mid", ".midi")
COLUMN = {"crash": 0, "ride": 1, "snare": 2, "kick": 3, "hihat": 4, "toms": 5}
# One bar per style, 16 sixteenths per instrument ("o" hit).
STYLE_TEMPLATES: dict[str, dict[str, str]] = {
    "rock": {"hihat": "o-o-o-o-o-o-o-o-", "snare": "----o-------o---", "kick": "o-------o-o-----"},
    "funk": {"hihat": "oooooooooooooooo", "snare": "----o--o-o--o--o", "kick": "o--o--o---o--o--"},
    "shuffle": {"ride": "o--oo--oo--oo--o", "snare": "----o-------o---", "kick": "o-------o-------"},
    "hiphop": {"hihat": "o-o-o-o-o-o-o-o-", "snare": "--------o-------", "kick": "o-----o---o-----"},
    "disco": {"hihat": "o-ooo-ooo-ooo-oo", "snare": "----o-------o---", "kick": "o---o---o---o---"},
    "samba": {"ride": "o-o-o-o-o-o-o-o-", "snare": "--o--o--o-o--o--", "kick": "o--oo--oo--oo--o"},
}
FILL_BARS = (3, 7, 11, 15)  # 0-based: bars 4, 8, 12, 16
MUTATION_RATE = 0.03
PIPELINE_VERSION = 1  # bump when drumroll.py's MIDI -> text changes (invalidates cached text)
ENGLISH_DOC_MODULES = ("abc", "argparse", "array", "base64", "bisect", "calendar", "collections", "contextlib",
                       "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions",
                       "functools", "heapq", "html", "inspect", "itertools", "json", "logging", "math",
                       "operator", "os", "pathlib", "pickle", "queue", "random", "re", "shutil", "statistics",
                       "string", "subprocess", "tarfile", "textwrap", "threading", "typing", "unittest",
                       "urllib.parse", "uuid", "zipfile")


# ----------------------------------------------------------------------------------------------
# Procedural grooves
# ----------------------------------------------------------------------------------------------
def _bar_from_template(template: dict[str, str]) -> list[list[str]]:
    bar = [[REST] * NUM_COLUMNS for _ in range(LINES_PER_BAR)]
    for instrument, pattern in template.items():
        for step, char in enumerate(pattern):
            if char == HIT:
                bar[step][COLUMN[instrument]] = HIT
    return bar


def generate_procedural_groove(style: str, rng: random.Random, *, num_bars: int = 16) -> list[str]:
    """One groove of ``num_bars`` bars as drumroll lines (see the module docstring)."""
    core = _bar_from_template(STYLE_TEMPLATES[style])
    variant = [row[:] for row in core]
    for step in rng.sample(range(LINES_PER_BAR), 2):  # the variant moves two kick/snare hits
        column = rng.choice((COLUMN["kick"], COLUMN["snare"]))
        variant[step][column] = HIT if variant[step][column] == REST else REST
    variant_every = rng.choice((2, 4))
    fill_pattern = [rng.choice((COLUMN["toms"], COLUMN["snare"])) if rng.random() < 0.8 else None for _ in range(8)]
    lines: list[str] = []
    for bar_index in range(num_bars):
        bar = [row[:] for row in (variant if (bar_index + 1) % variant_every == 0 else core)]
        if bar_index in FILL_BARS:
            for offset, column in enumerate(fill_pattern):
                bar[8 + offset] = [REST] * NUM_COLUMNS
                if column is not None:
                    bar[8 + offset][column] = HIT
        if bar_index == 0 or bar_index - 1 in FILL_BARS:
            bar[0][COLUMN["crash"]] = HIT
        for row in bar:
            if rng.random() < MUTATION_RATE:
                column = rng.randrange(NUM_COLUMNS)
                row[column] = HIT if row[column] == REST else REST
        lines.extend("".join(row) for row in bar)
    return lines


def generate_procedural_corpus(sizes: tuple[int, int, int], seed: int) -> dict[str, list[tuple[str, list[str]]]]:
    """(name, lines) per split; styles cycle so every split holds every style."""
    rng = random.Random(seed)
    styles = sorted(STYLE_TEMPLATES)
    corpus: dict[str, list[tuple[str, list[str]]]] = {}
    for split, size in zip(SPLITS, sizes):
        corpus[split] = [(f"{split}_{index:04d}_{styles[index % len(styles)]}",
                          generate_procedural_groove(styles[index % len(styles)], rng)) for index in range(size)]
    return corpus


# ----------------------------------------------------------------------------------------------
# English text
# ----------------------------------------------------------------------------------------------
def english_pretraining_text() -> str:
    """pydoc_data.topics (sorted by topic) + docstrings of ENGLISH_DOC_MODULES and their public members."""
    import importlib

    import pydoc_data.topics

    parts = [pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics)]
    for module_name in ENGLISH_DOC_MODULES:
        module = importlib.import_module(module_name)
        parts.append(inspect.getdoc(module) or "")
        for name in sorted(getattr(module, "__all__", None) or dir(module)):
            member = getattr(module, name, None)
            if not name.startswith("_") and (inspect.isclass(member) or inspect.isfunction(member)):
                parts.append(inspect.getdoc(member) or "")
    return "\n\n".join(part for part in parts if part)


# ----------------------------------------------------------------------------------------------
# Datasets and sampling
# ----------------------------------------------------------------------------------------------
class ListDataset(Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


class ShardedSampler(Sampler[int]):
    """Training: ``permutation(seed + epoch)[rank::world]``; evaluation: ``range(rank, n, world)``."""

    def __init__(self, num_items: int, *, shuffle: bool, seed: int, rank: int, world_size: int) -> None:
        self.num_items, self.shuffle, self.seed, self.rank, self.world_size = num_items, shuffle, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every training epoch
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        return iter(order[self.rank::self.world_size])

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.world_size))


def collate_sequences(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Right-pad variable-length 1-d tensors with 0 (pad id, weight 0, mask False); stack
    ``prompt_tokens`` (always 2 bars = 34 tokens); ints become a tensor, the rest lists."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor) and key != "prompt_tokens":
            padded = torch.zeros(len(values), max(len(value) for value in values), dtype=values[0].dtype)
            for row, value in enumerate(values):
                padded[row, : len(value)] = value
            batch[key] = padded
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], int):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


GM_DRUM_CHANNEL = 9  # MIDI channel 10, 0-based


def drum_track_only(midi: mido.MidiFile) -> mido.MidiFile:
    """One track (type 0) holding every track's meta messages and the drum channel's notes (all
    notes when no note is on channel 10), so a DAW's multi-track file reads like a GMD file."""
    merged = mido.merge_tracks(midi.tracks)
    has_drum_channel = any(message.type == "note_on" and message.channel == GM_DRUM_CHANNEL for message in merged)
    track, pending = mido.MidiTrack(), 0
    for message in merged:
        pending += message.time
        if has_drum_channel and message.type in ("note_on", "note_off") and message.channel != GM_DRUM_CHANNEL:
            continue  # a melodic note: its delta time moves on to the next kept message
        track.append(message.copy(time=pending))
        pending = 0
    single = mido.MidiFile(type=0, ticks_per_beat=midi.ticks_per_beat)
    single.tracks.append(track)
    return single


class GrooveDataModule(pl.LightningDataModule):
    def __init__(self, dataset: str = PROCEDURAL_DATASET, data_dir: str | None = None, cache_dir: str | None = None,
                 batch_size: int = 16, eval_batch_size: int = 64, prompt_loss_weight: float = 0.01,
                 procedural_sizes: tuple[int, int, int] = (400, 50, 50), procedural_seed: int = 0,
                 include_eval_session: bool = False, english_block_tokens: int = 320,
                 english_max_characters: int | None = None, num_workers: int = 0,
                 midi_folder: str | None = None) -> None:
        super().__init__()
        self.dataset_name = dataset
        self.midi_folder = midi_folder
        self.data_dir = Path(data_dir or os.environ.get("LITBENCH_DATA", "."))
        self.cache_dir = cache_dir
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.prompt_loss_weight = prompt_loss_weight
        self.procedural_sizes, self.procedural_seed = tuple(procedural_sizes), procedural_seed
        self.include_eval_session = include_eval_session
        self.english_block_tokens, self.english_max_characters = english_block_tokens, english_max_characters
        self.num_workers = num_workers
        self.tokenizer = DrumrollTokenizer()
        self.shuffle_seed = torch.initial_seed() % 2**31  # the run seed (the runner seeds before building us)
        self.grooves: dict[str, list[tuple[str, list[str]]]] = {}

    @staticmethod
    def dataset_formats() -> list[DatasetFormat]:
        return [
            DatasetFormat(name="Groove MIDI Dataset release (info.csv + groove-midionly.zip)", presets=(GMD_DATASET,),
                          layout="<data-dir>/groove_midi/{info.csv, groove-midionly.zip} (GMD v1.0.0 MIDI-only)"),
            DatasetFormat(name="MIDI folders (drum .mid files per split)", presets=(),
                          layout="<data-dir>/NAME/{train,dev,test}/**/*.mid (dev/ may be validation/); or "
                                 "midi_folder=FOLDER under <data-dir>. General MIDI drum pitches, x/4 time; each file "
                                 "becomes drumroll text by the GMD pipeline",
                          own_data_args={}, own_name="mygrooves",
                          notes=("the name alone describes it when the folder is <data-dir>/NAME; else "
                                 "--set data.init_args.midi_folder=FOLDER",)),
        ]

    # -- sources ---------------------------------------------------------------------------------
    def _gmd_root(self) -> Path:
        for root in (self.data_dir / "groove_midi", self.data_dir):
            if (root / INFO_CSV).is_file() and (root / GROOVE_ZIP).is_file():
                return root
        raise FileNotFoundError(f"dataset {GMD_DATASET!r} needs {INFO_CSV} and {GROOVE_ZIP} in "
                                f"{self.data_dir / 'groove_midi'} (GMD v1.0.0 MIDI-only; see its SOURCE.md)")

    def _read_gmd(self) -> dict[str, list[tuple[str, list[str]]]]:
        """The paper split as drumroll lines; cached as JSON in the cache dir because parsing the
        463 MIDI files with mido is slow (the cache key covers the zip's size and mtime)."""
        root = self._gmd_root()
        zip_stat = (root / GROOVE_ZIP).stat()
        key = hashlib.sha256(json.dumps([PIPELINE_VERSION, zip_stat.st_size, int(zip_stat.st_mtime),
                                         self.include_eval_session]).encode()).hexdigest()[:16]
        cache_file = self._cache_root() / f"gmd-paper-drumroll-{key}.json"
        if cache_file.is_file():
            return {split: [(name, lines) for name, lines in grooves]
                    for split, grooves in json.loads(cache_file.read_text()).items()}
        files = select_paper_files(read_info_csv(root / INFO_CSV), include_eval_session=self.include_eval_session)
        grooves: dict[str, list[tuple[str, list[str]]]] = {split: [] for split in SPLITS}
        with open_groove_zip(root / GROOVE_ZIP) as archive:
            for groove in files:
                lines = midi_to_drumroll(read_midi_from_zip(archive, groove.midi_filename))
                if lines is not None:
                    grooves[groove.split].append((groove.name, lines))
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(f".{os.getpid()}.partial")  # DDP ranks may write at once
        partial.write_text(json.dumps(grooves))
        partial.replace(cache_file)
        return grooves

    def _midi_split_folders(self) -> dict[str, Path]:
        """split -> folder of a MIDI-folder dataset, or a one-line error naming the presets and init_args."""
        root = self.data_dir / (self.midi_folder or self.dataset_name)
        folders = {split: next((root / name for name in names if (root / name).is_dir()), None)
                   for split, names in SPLIT_FOLDERS.items()}
        if all(folders.values()):
            return folders
        if self.midi_folder is None and not root.is_dir():
            raise ValueError(f"unknown groove dataset {self.dataset_name!r} and no MIDI folder for it: the presets are "
                             f"{', '.join(PRESETS)}; put your drum MIDI files in {root}/{{train,dev,test}}/ or name "
                             "the folder with data.init_args.midi_folder=FOLDER (under --data-dir; see "
                             "`litbench datasets drum_lm`)")
        missing = [split for split, folder in folders.items() if folder is None]
        raise FileNotFoundError(f"dataset {self.dataset_name!r}: {root} needs the subfolders train/, dev/ (or "
                                f"validation/) and test/ of .mid files; missing {', '.join(missing)}")

    def _read_midi_folder(self) -> dict[str, list[tuple[str, list[str]]]]:
        """Each split's MIDI files as drumroll lines (the GMD pipeline), cached by the files' stats."""
        files = {split: sorted(path for path in folder.rglob("*") if path.suffix.lower() in MIDI_SUFFIXES)
                 for split, folder in self._midi_split_folders().items()}
        stats = {split: [(str(path), path.stat().st_size, int(path.stat().st_mtime)) for path in paths]
                 for split, paths in files.items()}
        key = hashlib.sha256(json.dumps([PIPELINE_VERSION, "drum_track_only", stats]).encode()).hexdigest()[:16]
        cache_file = self._cache_root() / f"midi-folder-drumroll-{key}.json"
        if cache_file.is_file():
            return {split: [(name, lines) for name, lines in grooves]
                    for split, grooves in json.loads(cache_file.read_text()).items()}
        grooves: dict[str, list[tuple[str, list[str]]]] = {}
        for split, paths in files.items():
            grooves[split] = []
            for path in paths:
                try:
                    lines = midi_to_drumroll(drum_track_only(mido.MidiFile(path)))
                except Exception as exc:  # noqa: BLE001 - mido's errors on a corrupt MIDI file vary
                    raise ValueError(f"{path}: not a readable MIDI file ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]})") from None
                if lines is not None:
                    grooves[split].append((path.stem, lines))
        empty = [split for split, items in grooves.items()
                 if not any(prompt_and_completion(lines) is not None for _, lines in items)]
        if empty:
            raise ValueError(f"dataset {self.dataset_name!r}: no usable groove in the {empty[0]} split "
                             f"({len(files[empty[0]])} .mid files): a groove is x/4 drum MIDI with more than "
                             f"{MIN_LINES_AFTER_STRIP // LINES_PER_BAR} bars after its leading silence")
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(grooves))
        partial.replace(cache_file)
        return grooves

    def _cache_root(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        if os.environ.get("LITBENCH_CACHE"):
            return Path(os.environ["LITBENCH_CACHE"])
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "litbench"

    def prepare_data(self) -> None:
        """The GMD files checked whole before any run: the release md5s (verified once, remembered
        in the cache) and every selected MIDI file parsed (the drumroll cache keeps the result)."""
        if self.dataset_name == GMD_DATASET:
            root = self._gmd_root()
            verify_md5({root / name: md5 for name, md5 in GMD_MD5.items()}, cache_dir=self._cache_root(), fix=GET_GMD)
            try:
                self.grooves = self.grooves or self._read_gmd()
            except (FileNotFoundError, ValueError):
                raise
            except Exception as exc:  # noqa: BLE001 - mido's errors on a corrupt MIDI file vary
                raise ValueError(f"{root / GROOVE_ZIP}: a MIDI file cannot be parsed ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())}); {GET_GMD}") from None
        elif self.dataset_name != PROCEDURAL_DATASET:
            self.grooves = self.grooves or self._read_midi_folder()

    def setup(self, stage: str | None = None) -> None:
        if self.grooves:
            return
        self.prepare_data()
        self.grooves = self.grooves or generate_procedural_corpus(self.procedural_sizes, self.procedural_seed)

    # -- items -----------------------------------------------------------------------------------
    def sequence_items(self, split: str) -> list[dict[str, Any]]:
        items = []
        for name, lines in self.grooves[split]:
            pair = prompt_and_completion(lines)
            if pair is None:
                continue
            prompt, completion = (self.tokenizer.encode_drumroll(text) for text in pair)
            tokens = torch.tensor(prompt + completion)
            completion_mask = torch.tensor([False] * len(prompt) + [True] * len(completion))
            weights = torch.where(completion_mask, 1.0, self.prompt_loss_weight)
            items.append({"tokens": tokens, "loss_weights": weights, "completion_mask": completion_mask})
        return items

    def generation_items(self, split: str) -> list[dict[str, Any]]:
        items = []
        for name, lines in self.grooves[split]:
            pair = prompt_and_completion(lines)
            if pair is not None:
                items.append({"index": len(items), "prompt_tokens": torch.tensor(self.tokenizer.encode_drumroll(pair[0])),
                              "gold_lines": lines, "name": name})
        return items

    def english_items(self) -> list[dict[str, Any]]:
        text = english_pretraining_text()[: self.english_max_characters]
        tokens = torch.tensor(self.tokenizer.encode_text(text))
        blocks = tokens[: len(tokens) // self.english_block_tokens * self.english_block_tokens]
        return [{"tokens": block, "loss_weights": torch.ones(len(block))}
                for block in blocks.view(-1, self.english_block_tokens)]

    # -- loaders ---------------------------------------------------------------------------------
    def _loader(self, items: list[dict[str, Any]], *, batch_size: int, shuffle: bool) -> DataLoader:
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the {world_size} devices")
        sampler = ShardedSampler(len(items), shuffle=shuffle, seed=self.shuffle_seed, rank=rank, world_size=world_size)
        return DataLoader(ListDataset(items), batch_size=batch_size // world_size if shuffle else batch_size,
                          sampler=sampler, collate_fn=collate_sequences, **loader_options(self.num_workers))

    def train_dataloader(self) -> DataLoader:
        module = self.trainer.lightning_module if self.trainer else None
        if getattr(module, "training_corpus", "grooves") == "english":
            return self._loader(self.english_items(), batch_size=self.batch_size, shuffle=True)
        return self._loader(self.sequence_items("train"), batch_size=self.batch_size, shuffle=True)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.generation_items("test"), batch_size=self.eval_batch_size, shuffle=False),
                self._loader(self.sequence_items("dev"), batch_size=self.eval_batch_size, shuffle=False)]
