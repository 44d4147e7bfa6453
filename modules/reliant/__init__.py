"""RELIANT: fair knowledge distillation for GNNs (CPF instantiation), its teachers and students.

Paper: Y. Dong, B. Zhang, Y. Yuan, N. Zou, Q. Wang, J. Li, "RELIANT: Fair Knowledge Distillation
for Graph Neural Networks", SIAM SDM 2023, arXiv:2301.01150. Official code: yushundong/RELIANT
(``src/CPF-master``: ``train_dgl.py``, ``hypersearch.raw_experiment``, ``distill_dgl.py``,
``models/PLP.py``), summarised in ``papers/reliant.md``. The losses and the student networks are in
``modules/reliant/blocks.py``; the LightningModules here. What is implemented:

* ``GNNTeacher`` (stage 1, a cached per-seed stage): GCN in→64→64→2, dropout 0.8 before layers 2
  and 3, Adam lr 0.01 / wd 1e-3; GraphSAGE in→128→128→128→2 (mean over N(v)∪{v}, no root
  weight = DGL's 'gcn' aggregator), dropout 0.5 also on the input, lr 0.01 / wd 5e-4; GAT (CPF's
  8 heads × 8 → 1 head) as an extra. Full-batch CE on train nodes, early stopping on validation
  accuracy (``>=``, patience 500 of ≤1000 epochs), best weights reloaded. Its artifact holds the
  softmax outputs T rounded to 4 decimals (CPF's ``output.txt``).
* ``FairDistillationStudent`` (stage 2): PLP or MLP student, L_KD = ‖softmax(z)[U] − T[U]‖₂
  (unsquared Frobenius norm over the non-train nodes U), plus α·L_fair on V_s = U with the
  Legendre surrogate f of ``legendre_step_surrogate``; the learnable proxy P ∈ R^{n×2} (U(0,1)
  init, own Adam with the student's lr and wd) replaces the **last two feature columns**: the
  student step sees mean(P) for every node, the proxy step sees P per node and *maximises*
  α·L_fair (only P is updated); validation/test see mean(P). Model selection: best validation
  accuracy (``>=``), patience 500; the student weights of the best epoch are reloaded while P
  keeps its last value, as in the official code. ``proxy_mode="fixed"`` is the official proxy 1
  (one-hot of the true s, not trained), ``"none"`` with α=0 is the vanilla CPF student.
* PLP: one shared PLPConv applied L−1 times, train nodes re-clamped to their one-hot labels after
  each application; edge score e_uv = ⟨dropout(x_u), a⟩ (xavier-normal, gain √2), softmax over
  each node's in-edges (A+I), attention dropout; output ReLU(σ(β_v)·Σ_u α_uv h_u +
  σ(−β_v)·MLP(x_v)), MLP d→64→2 with dropout feat_drop; log_softmax of the final clamped labels.
* ``TeacherReference``: the teacher's stored predictions scored like every student (no fitting).

Metrics (``modules.reliant.fairness``): test accuracy, AUROC and F1 of class 1, ΔSP and ΔEO on the
test nodes' hard predictions.

Deviations from the official code (each deliberate):

1. DGL → PyG: GCNConv / SAGEConv / GATConv via PyG's ``GCN``/``GraphSAGE``/``GAT`` models, edge
   softmax and scatter from ``torch_geometric.utils``. On A+I, DGL's 'gcn' aggregator adds h_v
   once more than the mean over N(v)∪{v} used here. GAT: no attention dropout (feature dropout 0.6).
2. The MLP student (the paper spec's cheaper substitute) is PLP's feature MLP alone, trained with
   the same L_KD and RELIANT terms (CPF trains non-PLP students with KL on all nodes and no
   fairness term).
3. Seeds: the run seed replaces CPF's fixed seed 42; teachers are trained once per seed.
4. The proxy step takes ∂L/∂P with ``torch.autograd.grad`` instead of ``backward()`` (the official
   backward also fills the student's gradients, which the next ``zero_grad`` discards): same
   update, and DDP sees exactly one backward per step.
5. ``fairness_nodes="train"`` (off by default) is the leakage-free variant of pitfall 4: the
   official fairness and proxy terms use s of the val+test nodes and, for ΔEO, their labels y.
6. The GraphAKD instantiation (SGC student, adversarial discriminators) is not implemented.
7. ``cpu`` profile (sizes only, numbers in the spec's comments): 5,000-node snowball subgraphs of
   Bail and Credit with the official split rule redrawn on them, L=5, ≤200 epochs with patience 50
   (Credit's students: 200, chosen on a validation curve), and α scaled by √(|U_cpu| / |U_full|). L_KD is an unsquared norm over U, so its per-node gradient
   falls like 1/√|U| and L_fair's like 1/|U|; the scaling keeps the official α=1e3's per-node
   balance of the two terms on the smaller graph (derived from split sizes, not chosen on results).
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv
from torch_geometric.nn.models import GAT, GCN, GraphSAGE
from torch_geometric.utils import to_torch_csr_tensor

from modules.common.trainer_access import attached_datamodule
from modules.reliant.fairness import FairClassificationMetrics
from modules.reliant.blocks import PLP, FeatureMLP, distillation_l2_loss, fairness_surrogate_loss

TEACHER_FILE = "teacher.pt"
PROXY_COLUMNS = 2


# ----------------------------------------------------------------------------------------------
# Model selection shared by teachers and students
# ----------------------------------------------------------------------------------------------
class KeepBestValidationState(Callback):
    """Official CPF selection: keep the weights of ``module_attribute`` from the last epoch whose
    ``val/acc`` is ``>=`` the best so far, stop after ``patience`` epochs without one, reload them
    when fitting ends. (Lightning's EarlyStopping/ModelCheckpoint use strict improvement and files.)"""

    def __init__(self, module_attribute: str, patience: int, monitor: str = "val/acc") -> None:
        self.module_attribute, self.patience, self.monitor = module_attribute, patience, monitor
        self.best = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epochs_without_best = 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if value >= self.best:
            self.best, self.epochs_without_best = value, 0
            self.best_state = copy.deepcopy(getattr(pl_module, self.module_attribute).state_dict())
        else:
            self.epochs_without_best += 1
            if self.epochs_without_best >= self.patience:
                trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.best_state is not None:
            getattr(pl_module, self.module_attribute).load_state_dict(self.best_state)


def _graph_shape(module: pl.LightningModule) -> tuple[int, int, int]:
    datamodule = attached_datamodule(module)
    if datamodule is None or getattr(datamodule, "graph", None) is None:
        raise RuntimeError(f"{type(module).__name__}: train with a set-up FairGraphDataModule (it needs the graph's shape)")
    return datamodule.num_nodes, datamodule.num_features, datamodule.num_classes


def _log_test_metrics(module: pl.LightningModule, metrics: FairClassificationMetrics, probabilities: torch.Tensor,
                      batch: Data) -> None:
    mask = batch.test_mask
    metrics.reset()
    metrics.update(probabilities[mask, 1], batch.y[mask], batch.sensitive[mask])
    values = {f"test/{name}": value for name, value in metrics.compute().items()}
    metrics.reset()
    # Every rank scores the same full graph, so the values already agree across processes.
    module.log_dict(values, batch_size=1, sync_dist=True)


# ----------------------------------------------------------------------------------------------
# Stage 1: teachers
# ----------------------------------------------------------------------------------------------
class GNNTeacher(pl.LightningModule):
    """GCN / GraphSAGE / GAT teacher (see the module docstring); ``save_stage_artifact`` writes T."""

    def __init__(self, conv: str = "gcn", hidden: int = 64, num_layers: int = 3, dropout: float = 0.8,
                 input_dropout: float = 0.0, heads: int = 8, lr: float = 0.01, weight_decay: float = 1e-3,
                 patience: int = 500) -> None:
        super().__init__()
        self.save_hyperparameters()
        if conv not in ("gcn", "sage", "gat"):
            raise ValueError(f"conv must be 'gcn', 'sage' or 'gat', got {conv!r}")
        self.model: nn.Module | None = None
        self.test_metrics = FairClassificationMetrics()
        self._adjacency: tuple | None = None  # (edge_index, device, dtype, its CSR adj_t)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        _, num_features, num_classes = _graph_shape(self)
        hp = self.hparams
        shared = dict(in_channels=num_features, hidden_channels=hp.hidden, num_layers=hp.num_layers,
                      out_channels=num_classes, dropout=hp.dropout)
        if hp.conv == "gcn":
            self.model = GCN(**shared, cached=True)  # one fixed full graph: cache the normalisation
        elif hp.conv == "sage":
            self.model = GraphSAGE(**shared, aggr="mean", root_weight=False)
        else:
            self.model = GAT(**{**shared, "hidden_channels": hp.hidden * hp.heads}, heads=hp.heads, act="elu")

    def adjacency(self, edge_index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """GCN/SAGE run on a CSR adj_t (sparse matmul: faster on CPU than gathering [E, d]
        messages); GAT needs per-edge attention, so it keeps the edge list.

        The CSR matrix and GCNConv's cached normalisation are not buffers, so ``.to()`` does not
        move them: both are rebuilt whenever the edge list, the device or the dtype of the features
        (``like``) changes (a CPU-built cache met CUDA features in the GPU runs)."""
        if self.hparams.conv == "gat":
            return edge_index
        key = (edge_index, like.device, like.dtype)
        if self._adjacency is None or self._adjacency[0] is not edge_index or self._adjacency[1:3] != key[1:]:
            num_nodes = int(edge_index.max()) + 1
            with warnings.catch_warnings():  # torch's "sparse CSR is beta" notices, once per run
                warnings.simplefilter("ignore", UserWarning)
                adjacency = to_torch_csr_tensor(edge_index.flip(0), size=(num_nodes, num_nodes)).to(like.dtype)
            for module in self.modules():
                if isinstance(module, GCNConv):  # its cached normalisation belongs to the old adjacency
                    module._cached_edge_index = module._cached_adj_t = None  # noqa: SLF001 - PyG's cache slots
            self._adjacency = (*key, adjacency)
        return self._adjacency[3]

    def forward(self, batch: Data) -> torch.Tensor:
        features = F.dropout(batch.x, p=self.hparams.input_dropout, training=self.training)
        return self.model(features, self.adjacency(batch.edge_index, like=features))

    def training_step(self, batch: Data, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch)[batch.train_mask], batch.y[batch.train_mask])
        self.log("train/loss", loss, batch_size=1)
        return loss

    def validation_step(self, batch: Data, batch_idx: int) -> None:
        correct = (self(batch).argmax(dim=1) == batch.y)[batch.val_mask].float().mean()
        self.log("val/acc", correct, batch_size=1, sync_dist=True)

    def test_step(self, batch: Data, batch_idx: int) -> None:
        _log_test_metrics(self, self.test_metrics, self(batch).softmax(dim=1), batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def configure_callbacks(self) -> list[Callback]:
        return [KeepBestValidationState("model", patience=self.hparams.patience)]

    @torch.no_grad()
    def soft_labels(self, graph: Data) -> torch.Tensor:
        self.eval()
        return torch.round(self(graph.to(self.device)).softmax(dim=1), decimals=4).cpu()

    def save_stage_artifact(self, folder: Path) -> Path:
        graph = self.trainer.datamodule.graph
        path = Path(folder) / TEACHER_FILE
        torch.save({"soft_labels": self.soft_labels(graph), "state_dict": self.model.state_dict(),
                    "hparams": dict(self.hparams), "num_nodes": int(graph.num_nodes)}, path)
        return path


def load_teacher_soft_labels(teacher_path: str | Path, num_nodes: int) -> torch.Tensor:
    path = Path(teacher_path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher artifact {path} not found; it is written by the GNNTeacher stage")
    soft_labels = torch.load(path, map_location="cpu", weights_only=True)["soft_labels"]
    if soft_labels.size(0) != num_nodes:
        raise ValueError(f"teacher artifact {path} has {soft_labels.size(0)} nodes, the graph {num_nodes}")
    return soft_labels


class TeacherReference(pl.LightningModule):
    """Scores the teacher stage's stored predictions on the test nodes (no training)."""

    requires_fit = False

    def __init__(self, teacher_path: str | None = None) -> None:
        super().__init__()
        self.teacher_path = teacher_path
        self.test_metrics = FairClassificationMetrics()

    def test_step(self, batch: Data, batch_idx: int) -> None:
        if self.teacher_path is None:
            raise ValueError("TeacherReference needs teacher_path (declare the teacher stage with pass_as: teacher_path)")
        soft_labels = load_teacher_soft_labels(self.teacher_path, batch.num_nodes).to(batch.x.device)
        _log_test_metrics(self, self.test_metrics, soft_labels, batch)

    def configure_optimizers(self):
        return None


# ----------------------------------------------------------------------------------------------
# Stage 2: students
# ----------------------------------------------------------------------------------------------
class FairDistillationStudent(pl.LightningModule):
    """Vanilla-KD, RELIANT or fixed-proxy student (PLP or MLP) distilled from a teacher artifact.

    ``proxy_mode``: ``none`` (X as is), ``fixed`` (last two columns ← mean of one-hot s), or
    ``learnable`` (RELIANT). ``alpha`` weighs L_fair for ``fairness_metric`` ``sp`` or ``eo``.
    """

    def __init__(self, teacher_path: str | None = None, student: str = "plp", proxy_mode: str = "learnable",
                 alpha: float = 1000.0, fairness_metric: str = "sp", fairness_nodes: str = "non_train",
                 num_layers: int = 10, hidden: int = 64, feat_drop: float = 0.8, attn_drop: float = 0.2,
                 lr: float = 0.01, weight_decay: float = 0.01, patience: int = 500) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, value, allowed in (("student", student, ("plp", "mlp")), ("proxy_mode", proxy_mode, ("none", "fixed", "learnable")),
                                     ("fairness_metric", fairness_metric, ("sp", "eo")),
                                     ("fairness_nodes", fairness_nodes, ("non_train", "train"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.automatic_optimization = False  # alternating student / proxy updates
        self.student: nn.Module | None = None
        self.proxy: nn.Parameter | None = None
        self.test_metrics = FairClassificationMetrics()

    # -- construction ------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.student is not None:
            return
        num_nodes, num_features, num_classes = _graph_shape(self)
        hp = self.hparams
        if hp.student == "plp":
            self.student = PLP(num_nodes, num_features, num_classes, num_layers=hp.num_layers, hidden=hp.hidden,
                               feat_drop=hp.feat_drop, attn_drop=hp.attn_drop)
        else:
            self.student = FeatureMLP(num_features, hp.hidden, num_classes, hp.feat_drop)
        if not hp.teacher_path:
            raise ValueError("FairDistillationStudent needs teacher_path (declare a teacher stage with pass_as: teacher_path)")
        self.register_buffer("teacher_probabilities", load_teacher_soft_labels(hp.teacher_path, num_nodes))
        if hp.proxy_mode == "learnable":
            self.proxy = nn.Parameter(torch.rand(num_nodes, PROXY_COLUMNS))
        elif hp.proxy_mode == "fixed":  # official proxy 1: [s, 1 - s]
            sensitive = attached_datamodule(self).graph.sensitive.float()
            del self.proxy
            self.register_buffer("proxy", torch.stack([sensitive, 1 - sensitive], dim=1))

    # -- forward passes ------------------------------------------------------------------------------
    def _features(self, batch: Data, per_node_proxy: bool) -> torch.Tensor:
        if self.proxy is None:
            return batch.x
        proxy = self.proxy if per_node_proxy else self.proxy.mean(dim=0, keepdim=True).expand(batch.num_nodes, -1)
        return torch.cat([batch.x[:, :-PROXY_COLUMNS], proxy], dim=1)

    def forward(self, batch: Data, per_node_proxy: bool = False) -> torch.Tensor:
        features = self._features(batch, per_node_proxy)
        if self.hparams.student == "plp":
            return self.student(features, batch.edge_index, batch.y, batch.train_mask)
        return self.student(features)

    def _fairness_nodes(self, batch: Data) -> torch.Tensor:
        nodes = ~batch.train_mask if self.hparams.fairness_nodes == "non_train" else batch.train_mask
        return nodes & (batch.y == 1) if self.hparams.fairness_metric == "eo" else nodes

    def _fairness_loss(self, probabilities: torch.Tensor, batch: Data) -> torch.Tensor:
        return fairness_surrogate_loss(probabilities, batch.sensitive, self._fairness_nodes(batch))

    # -- optimisation ----------------------------------------------------------------------------
    def training_step(self, batch: Data, batch_idx: int) -> None:
        hp = self.hparams
        optimisers = self.optimizers()
        student_optimiser = optimisers[0] if isinstance(optimisers, list) else optimisers
        probabilities = self(batch).softmax(dim=1)
        kd_loss = distillation_l2_loss(probabilities, self.teacher_probabilities, ~batch.train_mask)
        loss = kd_loss + hp.alpha * self._fairness_loss(probabilities, batch) if hp.alpha else kd_loss
        student_optimiser.zero_grad()
        self.manual_backward(loss)
        student_optimiser.step()
        self.log_dict({"train/loss": loss, "train/kd_loss": kd_loss}, batch_size=1)
        if hp.proxy_mode == "learnable":
            self._proxy_step(batch, optimisers[1])

    def _proxy_step(self, batch: Data, proxy_optimiser) -> None:
        """Adversarial step: P moves to *maximise* the student's bias (only P is updated)."""
        probabilities = self(batch, per_node_proxy=True).softmax(dim=1)
        proxy_loss = -self.hparams.alpha * self._fairness_loss(probabilities, batch)
        proxy_optimiser.zero_grad()
        (self.proxy.grad,) = torch.autograd.grad(proxy_loss, [self.proxy])
        proxy_optimiser.step()
        self.log("train/proxy_loss", proxy_loss, batch_size=1)

    def configure_optimizers(self):
        hp = self.hparams
        student = torch.optim.Adam(self.student.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.proxy_mode != "learnable":
            return student
        return [student, torch.optim.Adam([self.proxy], lr=hp.lr, weight_decay=hp.weight_decay)]

    def configure_callbacks(self) -> list[Callback]:
        return [KeepBestValidationState("student", patience=self.hparams.patience)]

    # -- evaluation --------------------------------------------------------------------------------
    def validation_step(self, batch: Data, batch_idx: int) -> None:
        correct = (self(batch).argmax(dim=1) == batch.y)[batch.val_mask].float().mean()
        self.log("val/acc", correct, batch_size=1, sync_dist=True)

    def test_step(self, batch: Data, batch_idx: int) -> None:
        probabilities = self(batch).softmax(dim=1)
        _log_test_metrics(self, self.test_metrics, probabilities, batch)
        agreement = (probabilities.argmax(dim=1) == self.teacher_probabilities.argmax(dim=1))[batch.test_mask]
        self.log("test/teacher_agreement", agreement.float().mean(), batch_size=1, sync_dist=True)
