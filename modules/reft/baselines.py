"""The prototype classifier: the RefT paper spec's training-free few-shot baseline.

The paper spec's cheap baseline 3: "logits = s * cos(query embedding, mu_c), no fine-tuning". The
shared base model (``modules.reft``'s cached ``base`` stage) is used as it is; only its class head is
replaced at test time:

* Embedding e_q of a query = the class head's input, ``heads.norm(q)`` of the final decoder query
  [inferred: the spec says "query embedding"; this is the vector the learnt class head reads].
* Prototypes: every image of the seeded K-shot set (``support_set(shots, setting)``) goes through
  the base network; its ground-truth instances are Hungarian-matched to its queries with the
  Mask2Former matching cost (the base model's class scores + mask BCE + Dice) and mu_c is the mean
  embedding of the queries matched to class-c instances, so K instances give K embeddings per class.
  The no-object prototype is the mean embedding of the support queries matched to nothing
  [inferred: with no fine-tuning there is no learnt background weight; the unmatched queries are
  what the detector treats as "no object" in those images].
* logits = s * cos(e_q, mu) over the C classes + no-object, s = 20 (``scale``) [inferred, as the
  paper's "w/ Cos" classifier]; a class without a prototype gets -inf. Masks and the inference rule
  (top-100 (query, class) pairs, score = p(c) x mean mask probability) are those of the base model.

With ``setting="fsis"`` the prototypes come from the novel-only K-shot set and the base classes are
masked out, as for the fine-tuned FSIS arms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from modules.reft import FewShotFineTune, downsample_masks
from modules.reft.matching import hungarian_match
from modules.reft.model import DecoderOutput, References

SUPPORT_CHUNK = 50  # support images per forward pass when building the prototypes


def cosine_logits(embeddings: torch.Tensor, prototypes: torch.Tensor, scale: float) -> torch.Tensor:
    """s * cos(e, mu) for embeddings [..., d] and prototypes [P, d] -> [..., P]."""
    return scale * F.normalize(embeddings, dim=-1) @ F.normalize(prototypes, dim=-1).T


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_prototypes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding per label 0..num_prototypes-1 ([N, d], [N] -> [P, d]) and a [P] flag of the labels seen."""
    sums = embeddings.new_zeros((num_prototypes, embeddings.shape[-1])).index_add_(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=num_prototypes)
    return sums / counts.clamp_min(1)[:, None].to(embeddings.dtype), counts > 0


class PrototypeClassifier(FewShotFineTune):
    """The base model with its class head replaced by cosine similarity to K-shot class prototypes."""

    requires_fit = False

    def __init__(self, *, scale: float = 20.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if self.uses_references:
            raise ValueError("PrototypeClassifier is a baseline without reference modules")
        self.prototypes: torch.Tensor | None = None
        self.prototype_valid: torch.Tensor | None = None

    @torch.no_grad()
    def support_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of every support query and their labels (the matched class, or C for no-object)."""
        datamodule = self.trainer.datamodule
        support_set = datamodule.support_set(self.shots, self.setting)
        num_classes = self.hparams.num_classes
        embeddings, labels = [], []
        for start in range(0, len(support_set), SUPPORT_CHUNK):
            items = [support_set[index] for index in range(start, min(start + SUPPORT_CHUNK, len(support_set)))]
            images = datamodule.to_model_input(torch.stack([item["image"] for item in items]).to(self.device))
            output = self.restrict(self.network(images))
            grid = tuple(output.mask_logits[-1].shape[-2:])
            for index, item in enumerate(items):
                item_labels = item["labels"].to(self.device)
                queries, targets = hungarian_match(output.class_logits[-1][index], output.mask_logits[-1][index].flatten(1),
                                                   item_labels, downsample_masks(item["masks"].to(self.device), grid),
                                                   self.weights)
                query_labels = torch.full((len(output.queries[index]),), num_classes, dtype=torch.long, device=self.device)
                query_labels[queries] = item_labels[targets]
                embeddings.append(self.network.heads.norm(output.queries[index]))
                labels.append(query_labels)
        return torch.cat(embeddings), torch.cat(labels)

    def on_test_epoch_start(self) -> None:
        embeddings, labels = self.support_embeddings()
        self.prototypes, self.prototype_valid = class_prototypes(embeddings, labels, self.hparams.num_classes + 1)
        super().on_test_epoch_start()

    def network_output(self, images: torch.Tensor, references: References | None) -> DecoderOutput:
        output = self.network(images, references)
        if self.prototypes is not None:
            logits = cosine_logits(self.network.heads.norm(output.queries), self.prototypes, self.hparams.scale)
            output.class_logits[-1] = logits.masked_fill(~self.prototype_valid, float("-inf"))
        return self.restrict(output)
