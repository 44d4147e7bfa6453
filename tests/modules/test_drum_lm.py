"""The small GPT (KV cache, loss, seeded sampling), the stage artifact and the reference systems."""

from __future__ import annotations

import math
import random

import pytest
import torch

from modules.drum_lm import (DrumLanguageModel, EnglishPretraining, HumanReference, RandomReference, RepeatReference,
                             TinyGPT, random_reference_grooves, sample_continuations, weighted_sequence_loss)

SMALL = {"d_model": 32, "num_layers": 2, "num_heads": 2, "context_length": 64}


def _model(seed: int = 0) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(vocab_size=20, dropout=0.0, **SMALL).eval()


def test_kv_cache_decoding_equals_the_full_forward() -> None:
    model, tokens = _model(), torch.randint(0, 20, (3, 12))
    full, _ = model(tokens)
    logits, caches = model(tokens[:, :5])
    stepwise = [logits]
    for position in range(5, 12):
        logits, caches = model(tokens[:, position:position + 1], caches, start=position)
        stepwise.append(logits)
    assert torch.allclose(torch.cat(stepwise, dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_weighted_loss_is_a_per_sequence_weighted_mean() -> None:
    tokens = torch.tensor([[1, 2, 3], [4, 5, 0]])
    logits = torch.zeros(2, 3, 7)  # uniform: every target costs log 7
    weights = torch.tensor([[0.01, 0.01, 1.0], [1.0, 1.0, 0.0]])
    assert weighted_sequence_loss(logits, tokens, weights).item() == pytest.approx(math.log(7))
    logits[0, 0, 2] = 10.0  # target 2 (prompt, weight 0.01) becomes nearly free
    expected_first = (0.01 * -torch.log_softmax(logits[0, 0], 0)[2] + math.log(7)) / 1.01
    assert weighted_sequence_loss(logits, tokens, weights).item() == pytest.approx((expected_first.item() + math.log(7)) / 2)


def test_sampling_is_seeded_per_row_and_stops_at_end() -> None:
    model, prompts = _model(), torch.randint(3, 20, (3, 4))
    generators = lambda: [torch.Generator().manual_seed(100 + row) for row in range(3)]  # noqa: E731
    batched = sample_continuations(model, prompts, max_new_tokens=20, temperature=0.9, end_id=2, generators=generators())
    alone = sample_continuations(model, prompts[1:2], max_new_tokens=20, temperature=0.9, end_id=2,
                                 generators=[torch.Generator().manual_seed(101)])
    assert batched[1] == alone[0]  # a groove's sample does not depend on its batch mates
    assert batched == sample_continuations(model, prompts, max_new_tokens=20, temperature=0.9, end_id=2,
                                           generators=generators())
    for tokens, ended in batched:
        assert 2 not in tokens and (ended or len(tokens) == 20)


def test_stage_artifact_loads_into_the_same_architecture_only(tmp_path) -> None:
    stage = EnglishPretraining(**SMALL)
    path = stage.save_stage_artifact(tmp_path)
    model = DrumLanguageModel(**SMALL, pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.model.state_dict().values(), stage.model.state_dict().values()))
    assert not torch.equal(DrumLanguageModel(**SMALL).model.blocks[0].mlp[0].weight, stage.model.blocks[0].mlp[0].weight)
    with pytest.raises(ValueError, match="same architecture"):
        DrumLanguageModel(**{**SMALL, "d_model": 16}, pretrained=str(path))


def _batch(golds: list[list[str]]) -> dict:
    return {"index": torch.arange(len(golds)), "gold_lines": golds, "name": [f"g{i}" for i in range(len(golds))]}


def test_references_follow_analysis_py() -> None:
    gold = [f"{i % 64:06b}".replace("0", "-").replace("1", "o") for i in range(256)]
    (human, human_generated, _), = HumanReference().continue_grooves(_batch([gold]))
    assert human == gold and human_generated == 224
    (repeat, _, _), = RepeatReference().continue_grooves(_batch([gold]))
    assert repeat == gold[:16] + gold[16:32] * 15
    rng = random.Random(29)
    first_two = [["".join(rng.choice(["-", "o"]) for _ in range(6)) for _ in range(256)] for _ in range(2)]
    outputs = RandomReference().continue_grooves({**_batch([gold, gold]), "index": torch.tensor([1, 0])})
    assert [lines for lines, _, _ in outputs] == [first_two[1], first_two[0]]
    assert random_reference_grooves(2) == first_two


def test_character_mean_init_of_line_tokens() -> None:
    model = DrumLanguageModel(**SMALL, line_embeddings_from_characters=True)
    tokenizer, embedding = model.tokenizer, model.model.token_embedding.weight
    for piece in ("o-----\n", "SEP\n", "END"):
        expected = embedding[tokenizer.encode_text(piece)].mean(dim=0)
        assert torch.allclose(embedding[tokenizer.index[piece]], expected)


def test_fresh_drum_token_embeddings_replace_only_the_rows_english_never_trains(tmp_path) -> None:
    stage = EnglishPretraining(**SMALL)
    with torch.no_grad():  # a pretrained state whose drum rows are far from the N(0, 0.02) init
        stage.model.token_embedding.weight.fill_(5.0)
    path = stage.save_stage_artifact(tmp_path)
    torch.manual_seed(0)
    fresh = DrumLanguageModel(**SMALL, pretrained=str(path), fresh_drum_token_embeddings=True)
    kept = DrumLanguageModel(**SMALL, pretrained=str(path))
    tokenizer, embedding = fresh.tokenizer, fresh.model.token_embedding.weight
    drum_rows = [tokenizer.index[piece] for piece in ("o-----\n", "------\n", "oooooo\n", "SEP\n", "END")]
    character_rows = tokenizer.encode_text("o-\nThe")
    assert len(fresh._drum_tokens()) == 66  # 64 drum lines + SEP + END
    assert torch.equal(embedding[character_rows], kept.model.token_embedding.weight[character_rows])
    assert torch.equal(embedding[tokenizer.pad_id], kept.model.token_embedding.weight[tokenizer.pad_id])
    assert embedding[drum_rows].abs().max() < 0.2 and embedding[fresh._drum_tokens()].std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(fresh.model.blocks[0].mlp[0].weight, kept.model.blocks[0].mlp[0].weight)
    with pytest.raises(ValueError, match="choose one"):
        DrumLanguageModel(**SMALL, line_embeddings_from_characters=True, fresh_drum_token_embeddings=True)
