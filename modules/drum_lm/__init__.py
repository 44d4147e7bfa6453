"""Drum LM: "Language Models are Drummers: Drum Composition with Natural Language Pre-Training",
Li Zhang & Chris Callison-Burch, AAAI 2023 Workshop on Creative AI Across Modalities
(arXiv 2301.01162; code ``zharry29/drums-with-llm``). A language model fine-tuned on ~400 Groove
MIDI grooves written as "drumroll" text continues a 2-bar prompt; text pretraining is claimed to
make the continuations more human-like than a Transformer trained from scratch (which "only
repeats"). The paper fine-tuned GPT-3 davinci / ada through OpenAI's retired legacy fine-tunes API.

Methods (``benchmarks/specs/drum_lm.yaml``):

* ``DrumLanguageModel`` — a small GPT (``TinyGPT``: pre-LN decoder blocks, learned positions,
  tied input/output embeddings, causal ``scaled_dot_product_attention`` with a KV cache). With
  ``pretrained`` (an ``EnglishPretraining`` artifact) it is the **pretrained** arm; without, the
  **scratch** arm (same architecture and steps, random init). The 66 drum tokens (64 lines, SEP,
  END) never occur in English; controls: ``fresh_drum_token_embeddings`` redraws their rows from
  the initial N(0, 0.02) (arm ``pretrained_fresh_drum_tokens``), ``line_embeddings_from_characters``
  starts each as the mean of its characters' pretrained embeddings (``pretrained_char_init``).
* ``EnglishPretraining`` — the cached stage, one per run seed: next-character prediction on
  CPython's bundled English documentation (``GrooveDataModule`` serves it to a module with
  ``training_corpus = "english"``).
* ``HumanReference`` / ``RandomReference`` / ``RepeatReference`` — the paper's references
  (``requires_fit = False``): the gold test text (unstripped); every character uniform over
  {o, -} for 256 lines from one ``random.Random(29)`` stream in sorted file order; bar 1 + bar 2
  repeated 15 times.

Every method is scored the same way (``GrooveEvaluator.test_step``): the output lines (prompt +
generation, ``SEP`` removed, cut at ``END``) go through ``modules.drum_lm.groove_stats`` next to the
human lines of the same groove; ``test/human_stat_distance`` is the claim's metric. The language
models also log ``test/dev_perplexity`` (completion tokens of the dev grooves). A few outputs are
written as MIDI + text under ``self.artifact_dir`` when the runner sets it.

Deviations from the official pipeline and the paper (each deliberate):

1. Model: a 4-layer, d=128 GPT (~0.9 M parameters) instead of GPT-3 davinci / ada, pretrained
   briefly on ~0.7 MB of English instead of the web; the scratch Transformer's architecture is not
   published, so it is the same small GPT. A minimal block instead of
   ``nn.TransformerEncoderLayer`` because generation needs a KV cache (O(n) instead of O(n^2) per
   groove on CPU), which the stock layer does not offer.
2. Tokens: characters for English, one token per drum line, ``SEP`` and ``END``
   (``DrumrollTokenizer``), not the spec's byte-level BPE (~2k) over English + drum text, whose
   pieces (``o`` / ``-`` runs / newline, ~3.2 per line) all occur in English but make a 16-bar
   groove ~850 tokens (context 512, 3x the sampling cost). Line tokens never occur in English; the
   ``pretrained_fresh_drum_tokens`` control removes what pretraining does to them.
3. Fine-tuning: AdamW with warm-up + cosine decay for a fixed number of epochs (no checkpoint
   selection); OpenAI's legacy defaults (4 epochs, lr multiplier 0.05-0.2, batch ~0.2% of the
   data) are for a 175B model. Loss per groove = weighted mean NLL with completion tokens 1 and
   prompt tokens ``prompt_loss_weight`` = 0.01 (OpenAI's default), averaged over grooves (so two
   DDP ranks with half the batch give the same gradient as one process).
4. Sampling: temperature 0.9, top-p 1, stop at ``END``, at most ``max_new_tokens`` tokens (256 ≈ 15
   bars; the official 1000 BPE tokens ≈ 250-330 lines). Each groove draws from its own generator
   seeded by (run seed, groove index), so the result does not depend on batching or world size.
5. Back to MIDI: malformed lines are rests (official ``text_to_midi.py`` crashes past column 6).
6. Not done: the GPT-3 released-generations row (the data folder does not hold
   ``output_text_*``), the duplication analysis and the human annotations. Added metric:
   ``repeated_measure_rate`` (``groove_stats``), the spec's pure-repetition test (s_i = 0) per
   measure instead of per groove; the "repeats more" claim reads it, because a groove sampled at
   T = 0.9 is a pure repetition only if all ~200 of its lines copy the previous bar.
7. ``cpu`` profile = the spec's model: d=128, 4 layers, 4 heads, context 512; steps scaled to fit
   the 2-core budget: English stage 150 steps x 16 x 320 characters (~1.1 passes over the 0.69 MB
   corpus: the spec's "2-3 min of pretraining"), once per seed; fine-tuning 4 epochs (OpenAI's
   default) x 24 steps of 16 grooves, lr 1e-3.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.text import Perplexity

from datamodules.drumroll import (DrumrollTokenizer, LINES_PER_BAR, NUM_COLUMNS, drumroll_to_midi, generated_lines,
                                  is_well_formed_line)
from modules.drum_lm.groove_stats import GrooveStructure, GrooveStructureMetric
from modules.common.schedules import TimmStepSchedule, warmup_cosine

IGNORE_INDEX = -100
RANDOM_REFERENCE_SEED = 29  # analysis.py's random.seed(29)
RANDOM_REFERENCE_LINES = 256
INIT_STD = 0.02  # GPT-2's N(0, 0.02) for every weight matrix and embedding


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    def __init__(self, *, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        batch, length, width = x.shape
        q, k, v = (part.view(batch, length, self.num_heads, -1).transpose(1, 2) for part in self.qkv(x).split(width, 2))
        if cache is not None:  # decoding one new position: it may attend to every cached one
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, length, width)), (k, v)


class DecoderBlock(nn.Module):
    def __init__(self, *, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm, self.mlp_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model=d_model, num_heads=num_heads, dropout=dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache=None):
        attended, new_cache = self.attention(self.attention_norm(x), cache)
        x = x + attended
        return x + self.mlp(self.mlp_norm(x)), new_cache


class TinyGPT(nn.Module):
    def __init__(self, *, vocab_size: int, context_length: int, d_model: int, num_layers: int, num_heads: int,
                 dropout: float) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(context_length, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(DecoderBlock(d_model=d_model, num_heads=num_heads, dropout=dropout)
                                    for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, caches: list | None = None, start: int = 0):
        """Logits [B, T, V] for positions start..start+T-1, and the per-block KV caches."""
        if start + tokens.size(1) > self.context_length:
            raise ValueError(f"sequence of {start + tokens.size(1)} tokens exceeds the context of {self.context_length}")
        positions = torch.arange(start, start + tokens.size(1), device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        new_caches = []
        for index, block in enumerate(self.blocks):
            x, cache = block(x, None if caches is None else caches[index])
            new_caches.append(cache)
        return self.final_norm(x) @ self.token_embedding.weight.T, new_caches


@torch.no_grad()
def sample_continuations(model: TinyGPT, prompts: torch.Tensor, *, max_new_tokens: int, temperature: float,
                         end_id: int, generators: list[torch.Generator]) -> list[tuple[list[int], bool]]:
    """Sample each row until ``end_id`` (not included) or ``max_new_tokens``; row r draws only from
    ``generators[r]``. Returns (tokens, whether END was sampled) per row."""
    logits, caches = model(prompts)
    outputs: list[list[int]] = [[] for _ in range(prompts.size(0))]
    finished = [False] * prompts.size(0)
    for step in range(max_new_tokens):
        probabilities = torch.softmax(logits[:, -1].double() / temperature, dim=-1).cpu()
        next_tokens = [int(torch.multinomial(row, 1, generator=generator)) for row, generator in
                       zip(probabilities, generators)]
        for row, token in enumerate(next_tokens):
            if not finished[row]:
                finished[row] = token == end_id
                if not finished[row]:
                    outputs[row].append(token)
        if all(finished) or step == max_new_tokens - 1:
            break
        feed = torch.tensor(next_tokens, device=prompts.device).unsqueeze(1)
        logits, caches = model(feed, caches, start=prompts.size(1) + step)
    return list(zip(outputs, finished))


def weighted_sequence_loss(logits: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of (Σ_t w_t·NLL_t / Σ_t w_t), target t predicted from tokens < t."""
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    target_weights = weights[:, 1:]
    return ((nll * target_weights).sum(1) / target_weights.sum(1).clamp_min(1e-8)).mean()


# ----------------------------------------------------------------------------------------------
# Evaluation shared by every method
# ----------------------------------------------------------------------------------------------
class GrooveEvaluator(pl.LightningModule):
    """test_step for every method: score ``continue_grooves`` against the human grooves."""

    midi_examples = 4  # grooves written as MIDI + text under artifact_dir

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = DrumrollTokenizer()
        self.structure = GrooveStructureMetric()

    def continue_grooves(self, batch: dict[str, Any]) -> list[tuple[list[str], int, bool]]:
        """Per groove: (output lines, number of lines that are generated, whether it ended)."""
        raise NotImplementedError

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx != 0:
            return
        rows = []
        for index, gold, name, (lines, num_generated, ended) in zip(batch["index"].tolist(), batch["gold_lines"],
                                                                    batch["name"], self.continue_grooves(batch)):
            generated = lines[len(lines) - num_generated:] if num_generated else []
            rows.append(GrooveStructureMetric.row(GrooveStructure.of_lines(lines), GrooveStructure.of_lines(gold),
                                                  well_formed_lines=sum(map(is_well_formed_line, generated)),
                                                  generated_lines=len(generated), ended=ended))
            self._save_example(name, lines)
        self.structure.update(batch["index"], torch.tensor(rows, dtype=torch.float64))

    def on_test_epoch_end(self) -> None:
        for name, value in self.structure.compute().items():
            self.log(f"test/{name}", value.float(), add_dataloader_idx=False)
        self.structure.reset()

    def on_test_epoch_start(self) -> None:
        self._examples_saved = 0

    def _save_example(self, name: str, lines: list[str]) -> None:
        """The first ``midi_examples`` grooves of global rank 0 (the runner publishes rank 0's
        files only): test grooves 0-3 in one process, 0, 2, 4, 6 under 2-process DDP."""
        folder = getattr(self, "artifact_dir", None)
        if folder is None or self.global_rank != 0 or getattr(self, "_examples_saved", 0) >= self.midi_examples:
            return
        self._examples_saved = getattr(self, "_examples_saved", 0) + 1
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        drumroll_to_midi(lines).save(folder / f"{name}.mid")
        (folder / f"{name}.txt").write_text("".join(line + "\n" for line in lines))


class HumanReference(GrooveEvaluator):
    requires_fit = False

    def continue_grooves(self, batch):
        return [(list(gold), len(gold) - 2 * LINES_PER_BAR, True) for gold in batch["gold_lines"]]


class RepeatReference(GrooveEvaluator):
    requires_fit = False

    def continue_grooves(self, batch):
        outputs = []
        for gold in batch["gold_lines"]:
            lines = gold[:LINES_PER_BAR] + gold[LINES_PER_BAR:2 * LINES_PER_BAR] * 15
            outputs.append((lines, len(lines) - 2 * LINES_PER_BAR, True))
        return outputs


class RandomReference(GrooveEvaluator):
    requires_fit = False

    def continue_grooves(self, batch):
        indices = batch["index"].tolist()
        grooves = random_reference_grooves(max(indices) + 1)
        return [(grooves[index], RANDOM_REFERENCE_LINES, True) for index in indices]


@functools.lru_cache(maxsize=4)
def random_reference_grooves(count: int) -> list[list[str]]:
    """The first ``count`` random grooves of one random.Random(29) stream, drawn as analysis.py
    draws them (groove by groove in sorted file order, line by line, character by character)."""
    rng = random.Random(RANDOM_REFERENCE_SEED)
    return [["".join(rng.choice(["-", "o"]) for _ in range(NUM_COLUMNS)) for _ in range(RANDOM_REFERENCE_LINES)]
            for _ in range(count)]


# ----------------------------------------------------------------------------------------------
# Language models
# ----------------------------------------------------------------------------------------------
class _TinyGPTTrainer(TimmStepSchedule, GrooveEvaluator):
    def __init__(self, *, d_model: int, num_layers: int, num_heads: int, context_length: int, dropout: float,
                 lr: float, weight_decay: float, warmup_steps: int) -> None:
        super().__init__()
        self.architecture = {"vocab_size": len(self.tokenizer), "context_length": context_length, "d_model": d_model,
                             "num_layers": num_layers, "num_heads": num_heads, "dropout": dropout}
        self.model = TinyGPT(**self.architecture)
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits, _ = self.model(batch["tokens"])
        loss = weighted_sequence_loss(logits, batch["tokens"], batch["loss_weights"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["tokens"].size(0))
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # linear warm-up, then cosine to 10 % of lr at the last step
        schedule = warmup_cosine(optimizer, total_steps=self.trainer.estimated_stepping_batches,
                                 warmup_steps=self.warmup_steps, lr_min=0.1 * self.lr)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class EnglishPretraining(_TinyGPTTrainer):
    """The stage: next-character prediction on English; its artifact is the TinyGPT state."""

    training_corpus = "english"

    def __init__(self, d_model: int = 128, num_layers: int = 4, num_heads: int = 4, context_length: int = 512,
                 dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 50) -> None:
        super().__init__(d_model=d_model, num_layers=num_layers, num_heads=num_heads, context_length=context_length,
                         dropout=dropout, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)

    def save_stage_artifact(self, folder: Path) -> Path:
        path = Path(folder) / "english_tiny_gpt.pt"
        torch.save({"architecture": self.architecture, "state_dict": self.model.state_dict()}, path)
        return path


class DrumLanguageModel(_TinyGPTTrainer):
    """Fine-tuned on prompt + completion; ``pretrained`` = the English stage artifact (or None)."""

    def __init__(self, d_model: int = 128, num_layers: int = 4, num_heads: int = 4, context_length: int = 512,
                 dropout: float = 0.1, lr: float = 5e-4, weight_decay: float = 0.01, warmup_steps: int = 50,
                 temperature: float = 0.9, max_new_tokens: int = 256, pretrained: str | None = None,
                 line_embeddings_from_characters: bool = False, fresh_drum_token_embeddings: bool = False) -> None:
        super().__init__(d_model=d_model, num_layers=num_layers, num_heads=num_heads, context_length=context_length,
                         dropout=dropout, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.generation_seed = torch.initial_seed()  # the run seed: the runner seeds before building us
        self.dev_perplexity = Perplexity(ignore_index=IGNORE_INDEX)
        if pretrained is not None:
            artifact = torch.load(pretrained, map_location="cpu", weights_only=True)
            if artifact["architecture"] != self.architecture:
                raise ValueError(f"{pretrained} holds a TinyGPT {artifact['architecture']}, this model is "
                                 f"{self.architecture}: give the stage and the method the same architecture")
            self.model.load_state_dict(artifact["state_dict"])
        if line_embeddings_from_characters and fresh_drum_token_embeddings:
            raise ValueError("line_embeddings_from_characters and fresh_drum_token_embeddings both set the drum-token "
                             "embeddings: choose one")
        if line_embeddings_from_characters:
            self._embed_pieces_as_character_means()
        if fresh_drum_token_embeddings:
            self._reinitialize_drum_token_embeddings()

    def _drum_tokens(self) -> list[int]:
        """The multi-character tokens (64 drum lines, SEP, END): English text never contains them."""
        return [token for token, piece in enumerate(self.tokenizer.pieces)
                if token != self.tokenizer.pad_id and len(piece) > 1]

    @torch.no_grad()
    def _reinitialize_drum_token_embeddings(self) -> None:
        """Redraw the drum-token embeddings from the initial N(0, 0.02), as new tokens added to a
        pretrained vocabulary start: with tied embeddings, English pretraining has pushed these
        rows to make tokens it never saw improbable, which the fine-tune would first have to undo."""
        embedding = self.model.token_embedding.weight
        rows = self._drum_tokens()
        embedding[rows] = torch.randn(len(rows), embedding.size(1)) * INIT_STD

    @torch.no_grad()
    def _embed_pieces_as_character_means(self) -> None:
        """Give every multi-character token (drum lines, SEP, END) the mean embedding of its
        characters, so that drum text starts from the (pretrained) character embeddings; an
        ablation closer to GPT-3, whose BPE spells drum lines with pieces it saw in English."""
        embedding = self.model.token_embedding.weight
        for token in self._drum_tokens():
            embedding[token] = embedding[self.tokenizer.encode_text(self.tokenizer.pieces[token])].mean(dim=0)

    def continue_grooves(self, batch):
        generators = [torch.Generator().manual_seed(self.generation_seed * 100_003 + index)
                      for index in batch["index"].tolist()]
        continuations = sample_continuations(self.model, batch["prompt_tokens"], max_new_tokens=self.max_new_tokens,
                                             temperature=self.temperature, end_id=self.tokenizer.end_id,
                                             generators=generators)
        outputs = []
        for prompt, (continuation, ended) in zip(batch["prompt_tokens"].tolist(), continuations):
            prompt_lines = generated_lines(self.tokenizer.decode(prompt))
            lines = generated_lines(self.tokenizer.decode(prompt + continuation))
            outputs.append((lines, len(lines) - len(prompt_lines), ended))
        return outputs

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        if dataloader_idx == 1:
            logits, _ = self.model(batch["tokens"])
            targets = batch["tokens"][:, 1:].masked_fill(~batch["completion_mask"][:, 1:], IGNORE_INDEX)
            self.dev_perplexity.update(logits[:, :-1], targets)
            return
        super().test_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.log("test/dev_perplexity", self.dev_perplexity.compute(), add_dataloader_idx=False)
        self.dev_perplexity.reset()
        super().on_test_epoch_end()
