"""IQA data: score-file readers against SOURCE.md, clear errors for the unshared image folders, the
image-folder path on a fake database, the synthetic set (graded levels, content-disjoint splits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from datamodules import iqa_synthetic
from datamodules.iqa import (DATABASES, IQADataModule, content_splits, find_score_file, read_score_file,
                             resolve_split_seed)
from tests_support import shared_data_root

# ../shared/data/iqa_scores/SOURCE.md: rows, reference contents, distortion types, score range
SOURCE_MD = {
    "LIVE": (779, 29, 5, -2.6, 112),
    "CSIQ": (866, 30, 6, 0.0, 1.0),
    "TID2013": (3000, 25, 23, 0.24, 7.21),
    "KADID-10k": (10125, 81, 25, 1.0, 4.93),
    "KonIQ-10k": (10073, 10073, 1, 3.9, 88.4),  # the official CSV: MOS on 1..100
    "LIVE-C": (1161, 1161, 1, 3.4, 92.4),
}


@pytest.mark.parametrize("dataset", sorted(SOURCE_MD))
def test_score_files_match_source_md(dataset: str) -> None:
    root = shared_data_root("iqa_scores")
    table = read_score_file(find_score_file(root, dataset))
    rows, contents, types, low, high = SOURCE_MD[dataset]
    assert len(table) == rows == DATABASES[dataset].rows
    assert table["content"].nunique() == contents and table["type"].nunique() == types
    assert table["score"].min() == pytest.approx(low, abs=0.06) and table["score"].max() == pytest.approx(high, abs=0.3)
    assert table["image"].str.startswith(table["image"].iloc[0].split("/")[0] + "/").all()


def test_koniq_official_sets_and_live_paths() -> None:
    root = shared_data_root("iqa_scores")
    koniq = read_score_file(find_score_file(root, "KonIQ-10k"))
    assert koniq["official_set"].value_counts().to_dict() == {"training": 7058, "test": 2015, "validation": 1000}
    assert koniq["image"].iloc[0] == "KonIQ-10k/1024x768/10004473376.jpg"
    live = read_score_file(find_score_file(root, "LIVE"))
    assert live.iloc[0][["image", "reference"]].tolist() == ["LIVE/jp2k/img2.bmp", "LIVE/refimgs/studentsculpture.bmp"]
    assert (live["score"] < 0).sum() == 3  # dropped by the datamodule, as in the official folder


@pytest.mark.parametrize("dataset", ["LIVE", "KonIQ-10k"])
def test_missing_image_folder_is_a_one_line_error(dataset: str) -> None:
    root = shared_data_root("iqa_scores")
    top = "LIVE" if dataset == "LIVE" else "KonIQ-10k"
    with pytest.raises(FileNotFoundError) as error:
        IQADataModule(dataset=dataset, data_dir=str(root)).prepare_data()
    message = str(error.value)
    assert "\n" not in message and f"image folder {top}/ not found" in message
    assert str(root / "iqa_images" / top) in message and "http" in message


def test_missing_and_corrupt_score_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="score file CSIQ.txt not found"):
        IQADataModule(dataset="CSIQ", data_dir=str(tmp_path)).prepare_data()
    (tmp_path / "CSIQ.txt").write_text("dis_img_path,dis_type\nCSIQ/a.png,AWGN\n")
    with pytest.raises(ValueError, match="missing score"):
        IQADataModule(dataset="CSIQ", data_dir=str(tmp_path)).prepare_data()


def _fake_csiq(root: Path, *, references: int = 5, per_reference: int = 4) -> None:
    """A CSIQ-layout database: score file in iqa_scores/, images under iqa_images/CSIQ/."""
    rows, rng = [], np.random.default_rng(0)
    for ref in range(references):
        for level in range(per_reference):
            path = f"CSIQ/dst_imgs/awgn/{ref}.AWGN.{level}.png"
            (root / "iqa_images" / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)).save(root / "iqa_images" / path)
            rows.append({"dis_img_path": path, "dis_type": "AWGN", "ref_img_path": f"CSIQ/src_imgs/{ref}.png",
                         "score": level / 4})
    (root / "iqa_scores").mkdir()
    pd.DataFrame(rows).to_csv(root / "iqa_scores" / "CSIQ.txt", index=False)


def test_image_folder_database_batches_and_split(tmp_path: Path) -> None:
    _fake_csiq(tmp_path)
    module = IQADataModule(dataset="CSIQ", data_dir=str(tmp_path), patch_size=32, train_patches=3, test_patches=2,
                           test_fraction=0.4, batch_size=4)
    module.prepare_data()
    module.setup("fit")
    assert module.grade_rule == "csiq"
    train, test = module.splits["train"], module.splits["test"]
    assert len(train) == 3 * 4 * 3 and len(test) == 2 * 4  # 3 refs x 4 images x 3 patches; 2 refs x 4 images
    references = module.table["content"]
    assert set(references.iloc[module.split_index["train"]]).isdisjoint(references.iloc[module.split_index["test"]])
    patch, score = train[5]  # the 2nd image (image-major repetition), a 32x32 crop
    assert patch.shape == (3, 32, 32) and patch.dtype == torch.uint8 and score == pytest.approx(0.25)
    crops, _, index = test[1]
    again, _, _ = test[1]
    assert index == 1  # the metric deduplicates DDP padding by it
    assert crops.shape == (2, 3, 32, 32) and torch.equal(crops, again)  # deterministic test crops
    batch = module.to_model_input(crops, train=False)
    expected = (crops[0, 0].float() / 255 - 0.485) / 0.229
    assert torch.allclose(batch[0, 0], expected, atol=1e-6)


def test_synthetic_levels_are_graded_in_the_quality_target() -> None:
    # the cpu profile's 128^2 references (on tiny flat crops JPEG q10 and q5 can decode identically)
    references = iqa_synthetic.skimage_references(reference_size=128, crops_per_image=1, seed=0)
    references += iqa_synthetic.procedural_references(count=2, reference_size=64, seed=0)
    images, labels = iqa_synthetic.distort_references(references, seed=0, rater_noise_std=2.0)
    assert len(images) == len(labels) == 17 * 25 and images[0].shape == (128, 128, 3)
    assert set(iqa_synthetic.SKIMAGE_IMAGES) == {c.removeprefix("skimage-") for c in labels["content"] if "skimage" in c}
    # blur, noise, contrast, salt & pepper: for every reference the SSIM pseudo-DMOS rises strictly
    # from level 1 to 5 (nested noise draws). JPEG: SSIM is not monotone in quality on every content
    # (moon's q5 blocks score better than its q10 ringing), so per reference only "mostly", and on
    # average over the references strictly.
    rising = labels.sort_values("level").groupby(["ref_img_path", "dis_type"])["ssim_dmos"].apply(
        lambda values: bool(np.all(np.diff(values.to_numpy()) > 0)))
    assert rising.drop(index="jpeg", level="dis_type").all()
    assert rising.xs("jpeg", level="dis_type").mean() >= 0.85
    mean_by_level = labels.groupby(["dis_type", "level"])["ssim_dmos"].mean().unstack()
    assert (mean_by_level.diff(axis=1).iloc[:, 1:] > 0).all().all()
    assert labels["score"].between(0, 100).all()
    noise = labels["score"] - labels["ssim_dmos"]
    assert 1.5 < noise[labels["score"].between(5, 95)].std() < 2.5  # the N(0, 2^2) rater noise
    again_images, again = iqa_synthetic.distort_references(references[:2], seed=0, rater_noise_std=2.0)
    assert again.equals(labels.iloc[:50]) and all(np.array_equal(a, b) for a, b in zip(again_images, images))


def test_synthetic_set_cached_and_split_by_content(tmp_path: Path) -> None:
    root = shared_data_root("cifar10_jpg")
    kwargs = dict(dataset="synthetic", data_dir=str(root), cache_dir=str(tmp_path), reference_size=48,
                  crops_per_image=2, cifar_references=3, patch_size=32, test_fraction=0.25)
    module = IQADataModule(**kwargs)
    module.prepare_data()
    module.setup("fit")
    table = module.table
    assert len(table) == (15 * 2 + 3) * 25 and table["content"].nunique() == 18
    train_contents = set(table["content"].iloc[module.split_index["train"]])
    test_contents = set(table["content"].iloc[module.split_index["test"]])
    assert train_contents.isdisjoint(test_contents) and len(test_contents) == 5  # both crops of a photo together
    assert {"cifar10-0", "cifar10-1000", "cifar10-2000"} <= train_contents | test_contents  # one per class
    labels = next((tmp_path / "iqa_synthetic").glob("synthetic-*/labels.csv"))
    assert list(pd.read_csv(labels).columns) == ["dis_img_path", "dis_type", "ref_img_path", "content", "level",
                                                 "ssim_dmos", "score"]
    stamp = labels.stat().st_mtime_ns
    rebuilt = IQADataModule(**kwargs)
    rebuilt.setup("fit")
    assert labels.stat().st_mtime_ns == stamp and rebuilt.table.equals(table)  # read back, not rebuilt


def test_missing_cifar_zips_name_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cifar_references=0"):
        IQADataModule(dataset="synthetic", data_dir=str(tmp_path), cache_dir=str(tmp_path)).prepare_data()


def test_split_follows_the_run_seed_and_validation_is_held_out(monkeypatch: pytest.MonkeyPatch) -> None:
    contents = pd.Series(np.repeat([f"ref{i}" for i in range(24)], 25))
    by_seed = {}
    for seed in range(3):
        monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))
        assert resolve_split_seed(None) == seed and resolve_split_seed(7) == 7  # an integer pins one split
        parts = content_splits(contents, test_fraction=0.2, val_fraction=0.2, seed=resolve_split_seed(None))
        names = {name: set(contents.iloc[index]) for name, index in parts.items()}
        assert len(names["test"]) == 5 and len(names["val"]) == 5 and len(names["train"]) == 14
        assert names["train"].isdisjoint(names["val"]) and names["train"].isdisjoint(names["test"])
        assert names["val"].isdisjoint(names["test"])
        # the test split does not depend on val_fraction: test runs and calibration runs share it
        plain = content_splits(contents, test_fraction=0.2, val_fraction=0.0, seed=seed)
        assert np.array_equal(plain["test"], parts["test"]) and len(plain["val"]) == 0
        assert set(contents.iloc[plain["train"]]) == names["train"] | names["val"]
        by_seed[seed] = frozenset(names["test"])
    assert len(set(by_seed.values())) == 3  # a new content split per seed


def test_validation_loader_scores_held_out_contents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "1")
    module = IQADataModule(dataset="generated", cache_dir=str(tmp_path), reference_size=48, generated_references=8,
                           patch_size=32, test_patches=2, test_fraction=0.25, val_fraction=0.25, split_seed=None,
                           eval_batch_size=25)
    module.prepare_data()
    module.setup("fit")
    assert module.split_seed == 1
    crops, scores, index = next(iter(module.val_dataloader()))
    assert crops.shape == (25, 2, 3, 32, 32) and len(module.splits["val"]) == 2 * 25
    val_contents = set(module.table["content"].iloc[module.split_index["val"]])
    assert val_contents.isdisjoint(module.table["content"].iloc[module.split_index["train"]])
    assert np.allclose(scores.numpy(), module.table["score"].iloc[module.split_index["val"][:25]].to_numpy())


def test_a_broken_cifar_zip_stops_prepare_data_with_one_line(tmp_path: Path) -> None:
    """The synthetic set's CIFAR-10 references come from the shared zip: a truncated copy used to end
    in a traceback; now prepare_data (the pre-run check) names the file."""
    source = shared_data_root("cifar10_jpg/cifar10_test_jpg.zip") / "cifar10_jpg" / "cifar10_test_jpg.zip"
    (tmp_path / "cifar10_jpg").mkdir()
    data = source.read_bytes()
    (tmp_path / "cifar10_jpg" / "cifar10_test_jpg.zip").write_bytes(data[: len(data) // 2])
    datamodule = IQADataModule(dataset="synthetic", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError) as error:
        datamodule.prepare_data()
    assert "cifar10_test_jpg.zip" in str(error.value) and "corrupt" in str(error.value) and "\n" not in str(error.value)


# -- presets and databases of your own: one description (ScoreFileFormat) -------------------------
def test_presets_keep_their_rules_and_own_databases_need_a_score_file_and_scale() -> None:
    from datamodules.iqa import score_file_format

    assert score_file_format("LIVE") == DATABASES["LIVE"] and DATABASES["LIVE"].min_score == 0.0
    assert DATABASES["KonIQ-10k"].resize == (384, 512) and DATABASES["CSIQ"].resize is None
    own = score_file_format("mine", score_file="m.csv", grade_rule="mos100")
    assert (own.file, own.grade_rule, own.min_score, own.resize) == ("m.csv", "mos100", None, None)
    for kwargs, message in (({}, "no description of it: the presets are synthetic, generated, LIVE"),
                            ({"score_file": "m.csv"}, "no grade_rule"),
                            ({"score_file": "m.csv", "grade_rule": "stars"}, "unknown IQA grade_rule 'stars'")):
        with pytest.raises(ValueError, match=message):
            IQADataModule("mine", **kwargs)


def test_own_database_with_bare_file_names_and_no_reference_column(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{index}.jpg")
    pd.DataFrame({"dis_img_path": [f"{i}.jpg" for i in range(5)], "score": [10, 20, 30, 40, 50]}).to_csv(
        tmp_path / "mine.csv", index=False)
    datamodule = IQADataModule("mine", data_dir=str(tmp_path), score_file="mine.csv", grade_rule="mos100",
                               image_dir="photos", patch_size=32, test_fraction=0.4, split_seed=0)
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.grade_rule == "mos100"
    assert len(datamodule.splits["train"].paths) + len(datamodule.splits["test"].paths) == 5  # each image a content
    assert datamodule.splits["test"][0][0].shape == (datamodule.hparams.test_patches, 3, 32, 32)
