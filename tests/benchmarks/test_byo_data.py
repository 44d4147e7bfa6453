"""Bring your own data (issue 32): per data family, a tiny dataset written here in that format under a
name litbench has never seen runs through the CLI (cpu profile, one seed, one cheap method) and
produces a record; an unknown name with no description is one line naming the presets and the
init_args that would describe it, exit 2. The commands are read from the README's "Bring your own
data" section (DIR = the data written here; the tests add --methods, --seeds 1 and fewer epochs).
"""

from __future__ import annotations

import json
import random
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmarks.cli import main
from leaderboard.records import read_record

REPO_ROOT = Path(__file__).resolve().parents[2]

QUIET = ["--seeds", "1", "--wandb", "disabled", "--workers", "1"]  # one process: no re-import per run


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITBENCH_NUM_THREADS", "1")


def _run(tmp_path: Path, benchmark: str, dataset: str, method: str, *sets: str) -> int:
    argv = ["run", benchmark, "--profile", "cpu", "--datasets", dataset, "--methods", method, *QUIET,
            "--data-dir", str(tmp_path / "data"), "--results", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache")]
    for assignment in sets:
        argv += ["--set", assignment]
    return main(argv)


def readme_command(benchmark: str) -> list[str]:
    """The README's "Bring your own data" command for ``benchmark``, split as a shell would."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(line) for line in section.splitlines() if line.startswith(f"litbench run {benchmark} ")]
    assert len(commands) == 1, f"the README has {len(commands)} bring-your-own-data commands for {benchmark}"
    return commands[0][1:]


def _ok_record_of_readme_command(tmp_path: Path, benchmark: str, method: str, *test_sets: str):
    """Run the README's command on the data written under ``tmp_path/data`` with one cheap method
    (exit 0) and return its ok record."""
    argv = [str(tmp_path / "data") if part == "DIR" else part for part in readme_command(benchmark)]
    dataset = argv[argv.index("--datasets") + 1]
    argv += ["--profile", "cpu", "--methods", method, *QUIET, "--results", str(tmp_path / "results"),
             "--cache-dir", str(tmp_path / "cache")]
    for assignment in test_sets:
        argv += ["--set", assignment]
    assert main(argv) == 0
    record = read_record(tmp_path / "results" / benchmark / dataset / method / "cpu" / "seed-0.json")
    assert record.ok, record.error
    return record


def _one_line_usage_error(capsys: pytest.CaptureFixture, *expected: str) -> str:
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    for text in expected:
        assert text in error, (text, error)
    return error


def _unknown_name_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, benchmark: str, dataset: str,
                                    method: str, *expected: str) -> None:
    """A name with no files and no description: exit 2 before any run, one line naming what would do."""
    capsys.readouterr()  # only this command's output (an earlier compiled run may have logged torch warnings)
    assert _run(tmp_path, benchmark, dataset, method) == 2
    _one_line_usage_error(capsys, *expected)
    assert not (tmp_path / "results" / benchmark / dataset).exists()


# -- writers of each format ---------------------------------------------------------------------
def write_fair_graph(root: Path, name: str, *, nodes: int = 80, seed: int = 0) -> None:
    """NIFTY-style csv (4 features, s, y) + an edge list of 0-based row numbers."""
    rng = np.random.default_rng(seed)
    sensitive = rng.integers(0, 2, nodes)
    labels = (rng.random(nodes) < 0.3 + 0.4 * sensitive).astype(int)
    features = rng.normal(size=(nodes, 4)) + labels[:, None]
    folder = root / name
    folder.mkdir(parents=True)
    table = pd.DataFrame({**{f"f{k}": features[:, k] for k in range(4)}, "s": sensitive, "y": labels})
    table.to_csv(folder / f"{name}.csv", index=False)
    pairs = [(i, j) for i in range(nodes) for j in range(i + 1, nodes) if labels[i] == labels[j] and rng.random() < 0.1]
    (folder / f"{name}_edges.txt").write_text("".join(f"{a} {b}\n" for a, b in pairs))


def write_npy_graph(root: Path, name: str, *, nodes: int = 60, classes: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    labels = np.arange(nodes) % classes
    features = (rng.random((nodes, 30)) < 0.03).astype(np.float32)
    for _ in range(5):  # five words of the node's own topic (words 10c .. 10c+9)
        features[np.arange(nodes), labels * 10 + rng.integers(0, 10, nodes)] = 1.0
    adjacency = ((labels[:, None] == labels[None, :]) & (rng.random((nodes, nodes)) < 0.2)).astype(np.int64)
    root.mkdir(parents=True, exist_ok=True)
    for part, array in (("feat", features), ("adj", np.maximum(adjacency, adjacency.T)), ("label", labels)):
        np.save(root / f"{name}_{part}.npy", array)


def write_iqa_set(root: Path, name: str, *, references: int = 6, seed: int = 0) -> None:
    """Score CSV (dis_img_path, dis_type, ref_img_path, score) + noisy versions of random references."""
    rng = np.random.default_rng(seed)
    images = root / f"{name}_images"
    images.mkdir(parents=True)
    rows = []
    for reference in range(references):
        base = rng.integers(0, 255, size=(72, 72, 3)).astype(np.float32)
        for level in range(3):
            file_name = f"r{reference}_l{level}.png"
            Image.fromarray(np.clip(base + rng.normal(0, 25 * level, base.shape), 0, 255).astype(np.uint8)).save(
                images / file_name)
            rows.append({"dis_img_path": file_name, "dis_type": "noise", "ref_img_path": f"r{reference}.png",
                         "score": 80.0 - 30 * level})
    pd.DataFrame(rows).to_csv(root / f"{name}.csv", index=False)


def write_midi_folder(root: Path, name: str, *, seed: int = 0) -> None:
    """Procedural grooves written as 2-track (tempo/meta + drums) MIDI files, as a DAW exports them."""
    from datamodules.drumroll import drumroll_to_midi
    from datamodules.grooves import STYLE_TEMPLATES, generate_procedural_groove

    rng, styles = random.Random(seed), sorted(STYLE_TEMPLATES)
    for split, count in (("train", 4), ("validation", 2), ("test", 2)):
        folder = root / name / split
        folder.mkdir(parents=True)
        for index in range(count):
            drumroll_to_midi(generate_procedural_groove(styles[index % len(styles)], rng)).save(folder / f"{index}.mid")


def write_coco_set(root: Path, name: str, *, train_images: int = 8, test_images: int = 4, seed: int = 0) -> None:
    """``<root>/<name>/{train,test}.json`` + ``images/``: 64x64 images with a red square and a blue
    rectangle (two categories, polygon masks)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "images").mkdir(parents=True)
    categories = [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]
    for split, count in (("train", train_images), ("test", test_images)):
        images, annotations = [], []
        for index in range(count):
            pixels = np.zeros((64, 64, 3), dtype=np.uint8)
            for category, colour, (height, width) in ((3, 0, (14, 14)), (7, 2, (8, 24))):
                top, left = int(rng.integers(0, 64 - height)), int(rng.integers(0, 64 - width))
                pixels[top:top + height, left:left + width, colour] = 255
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": category,
                                    "iscrowd": 0, "area": float(height * width), "bbox": [left, top, width, height],
                                    "segmentation": [[left, top, left + width, top, left + width, top + height,
                                                      left, top + height]]})
            file_name = f"{split}_{index}.png"
            Image.fromarray(pixels).save(folder / "images" / file_name)
            images.append({"id": index + 1, "file_name": file_name, "width": 64, "height": 64})
        (folder / f"{split}.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                          "categories": categories}))


def write_image_folder(root: Path, name: str, *, classes: int = 3, per_class: int = 6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", per_class // 2)):
        for class_index in range(classes):
            folder = root / name / split / f"class_{class_index}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
                pixels[..., class_index % 3] += 150
                Image.fromarray(pixels).save(folder / f"{index}.png")


# -- one test per family -----------------------------------------------------------------------
def test_fairness_graph_of_your_own(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_fair_graph(tmp_path / "data", "mygraph")
    record = _ok_record_of_readme_command(tmp_path, "reliant", "teacher_gcn", "stages.teacher.trainer.max_epochs=30")
    assert 0.75 < record.metrics["acc"] <= 1.0  # features shifted by y and label-homophilous edges
    assert record.config["data"]["init_args"]["graph_format"]["label"] == "y"

    _unknown_name_fails_in_one_line(tmp_path, capsys, "reliant", "othergraph", "teacher_gcn",
                                    "unknown fairness dataset 'othergraph'", "German, Bail, Credit, Pokec-z, Pokec-n",
                                    "graph_format={label: COLUMN, sensitive: COLUMN}", "edges_file", "split")


def test_graph_clustering_arrays_of_your_own(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_npy_graph(tmp_path / "data" / "graph_clustering", "mynet")
    record = _ok_record_of_readme_command(tmp_path, "dcagc", "kmeans_features")
    assert record.metrics["acc"] > 0.6  # three planted feature topics, well separated

    _unknown_name_fails_in_one_line(tmp_path, capsys, "dcagc", "othernet", "kmeans_features",
                                    "othernet_feat.npy", "Cora, CiteSeer")


def test_iqa_scores_of_your_own(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_iqa_set(tmp_path / "data", "myiqa")
    record = _ok_record_of_readme_command(tmp_path, "pmt_iqa", "single_task_regression", "trainer.max_epochs=1")
    assert -1.0 <= record.metrics["srcc"] <= 1.0

    _unknown_name_fails_in_one_line(tmp_path, capsys, "pmt_iqa", "otheriqa", "single_task_regression",
                                    "unknown IQA dataset 'otheriqa'", "LIVE, CSIQ", "score_file=", "grade_rule=")


def test_midi_folder_of_your_own(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_midi_folder(tmp_path / "data", "mygrooves")
    record = _ok_record_of_readme_command(tmp_path, "drum_lm", "repeat")
    # the repeat reference loops bar 2 of each test groove: pure repetition by construction
    assert record.metrics["pure_repetition_rate"] == 1.0

    _unknown_name_fails_in_one_line(tmp_path, capsys, "drum_lm", "othergrooves", "repeat",
                                    "unknown groove dataset 'othergrooves'", "gmd-paper, procedural-grooves",
                                    "midi_folder=")


def test_coco_json_of_your_own_needs_no_class_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_coco_set(tmp_path / "data", "mycoco")
    record = _ok_record_of_readme_command(tmp_path, "reft", "base_model", "stages.base.trainer.max_epochs=1")
    assert record.metrics["images_evaluated"] == 4
    artifact = torch.load(record.stages["base"]["artifact"], map_location="cpu", weights_only=True)
    assert artifact["architecture"]["num_classes"] == 2  # from the json, in the stage as in the method

    _unknown_name_fails_in_one_line(tmp_path, capsys, "reft", "othercoco", "base_model",
                                    "unknown instance-segmentation dataset 'othercoco'", "synthetic-shapes, coco2017",
                                    "train_json=PATH")


def test_image_folder_of_your_own(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_image_folder(tmp_path / "data", "myimages")
    record = _ok_record_of_readme_command(tmp_path, "lrpet", "lrpet", "trainer.max_epochs=1", "model.init_args.depth=8")
    assert 0.0 <= record.metrics["top1"] <= 1.0

    _unknown_name_fails_in_one_line(tmp_path, capsys, "lrpet", "myimages", "lrpet",
                                    "unknown image dataset 'myimages'", "imagefolder", "data.init_args.folder=")


def test_class_count_of_an_image_folder_reaches_the_model(tmp_path: Path) -> None:
    from benchmarks.contract import linked_model_config
    from datamodules.images import ImageClassificationDataModule

    write_image_folder(tmp_path, "five", classes=5, per_class=2)
    datamodule = ImageClassificationDataModule("imagefolder", data_dir=str(tmp_path), folder="five")
    unset = {"class_path": "modules.lrpet.LRPET", "init_args": {"depth": 8}}
    assert linked_model_config(unset, datamodule)["init_args"] == {"depth": 8, "num_classes": 5}
    explicit = {"class_path": "modules.lrpet.LRPET", "init_args": {"num_classes": 10}}
    assert linked_model_config(explicit, datamodule) == explicit  # an explicit value wins
    cifar = ImageClassificationDataModule("cifar10-jpg")
    assert linked_model_config(unset, cifar)["init_args"]["num_classes"] == 10  # the built-ins: what they had


def test_datasets_view_lists_formats_presets_layout_and_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["datasets", "reliant", "pmt_iqa", "drum_lm", "reft", "dcagc", "lrpet"]) == 0
    text = capsys.readouterr().out
    for expected in ("NIFTY csv + edge list", "presets: German, Bail, Credit, Pokec-z, Pokec-n",
                     "litbench run reliant --datasets mygraph --data-dir DIR --set data.init_args.graph_format.label=y",
                     "IQA score CSV + image folder", "data.init_args.grade_rule=mos100",
                     "MIDI folders", "litbench run drum_lm --datasets mygrooves --data-dir DIR",
                     "COCO instances json", "deep-graph-clustering arrays", "torchvision ImageFolder tree",
                     "litbench run lrpet --datasets imagefolder --data-dir DIR --set data.init_args.folder=myimages"):
        assert expected in text, expected
    assert main(["datasets", "nope"]) == 2
    _one_line_usage_error(capsys, "unknown benchmark 'nope'")


def test_litbench_fit_fills_the_class_count_of_an_image_folder_record(tmp_path: Path) -> None:
    """`litbench fit --config RECORD` builds the model as `litbench run` did: 12 classes from the
    folder (the model's default of 10 would index past its logits)."""
    write_image_folder(tmp_path / "data", "twelve", classes=12, per_class=2)
    assert _run(tmp_path, "lrpet", "imagefolder", "lrpet", "data.init_args.folder=twelve", "data.init_args.image_size=32",
                "trainer.max_epochs=1", "model.init_args.depth=8") == 0
    record = tmp_path / "results" / "lrpet" / "imagefolder" / "lrpet" / "cpu" / "seed-0.json"
    assert read_record(record).ok
    assert main(["fit", "--config", str(record)]) == 0
