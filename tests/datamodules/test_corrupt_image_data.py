"""Corrupt image files (MNIST idx gzips, CIFAR-10 JPEG zips): prepare_data reads every image once,
so a truncated, emptied or garbled file is one line naming it before any run, and the CLI exits 2
leaving the results folder untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.cli import main
from datamodules.images import ImageClassificationDataModule
from tests_support import damage_file, writable_copy

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("LITBENCH_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
MNIST, CIFAR = DATA_DIR / "mnist_test", DATA_DIR / "cifar10_jpg"
pytestmark = pytest.mark.skipif(not (MNIST.is_dir() and CIFAR.is_dir()), reason=f"shared image data not found under {DATA_DIR}")


def corrupted_copy(source: Path, root: Path, file_name: str, how: str, where: float) -> Path:
    folder = writable_copy(source, root / source.name)
    damage_file(folder / file_name, how, where, garble_bytes=64)
    return root


def prepare(dataset: str, root: Path) -> None:
    ImageClassificationDataModule(dataset=dataset, data_dir=str(root), cache_dir=str(root / "cache")).prepare_data()


@settings(max_examples=int(os.environ.get("LITBENCH_HYPOTHESIS_EXAMPLES", 25)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_name=st.sampled_from(["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]),
       how=st.sampled_from(["truncate", "empty", "garble"]), where=st.floats(0.0, 0.95))
def test_a_corrupt_mnist_gzip_is_one_line_naming_it(tmp_path_factory, file_name: str, how: str, where: float) -> None:
    root = corrupted_copy(MNIST, tmp_path_factory.mktemp("data"), file_name, how, where)
    with pytest.raises(ValueError) as error:
        prepare("mnist-t10k-split", root)
    message = str(error.value)
    assert "\n" not in message and file_name in message


@pytest.mark.parametrize(("how", "where"), [("truncate", 0.5), ("empty", 0.0), ("garble", 0.001), ("garble", 0.6)])
def test_a_corrupt_cifar_zip_is_one_line_naming_it(tmp_path: Path, how: str, where: float) -> None:
    root = corrupted_copy(CIFAR, tmp_path / "data", "cifar10_train500pc_jpg.zip", how, where)
    with pytest.raises(ValueError) as error:
        prepare("cifar10-jpg", root)
    message = str(error.value)
    assert "\n" not in message and "cifar10_train500pc_jpg.zip" in message and "corrupt" in message


def test_whole_files_are_read_in_prepare_data_and_cached(tmp_path: Path) -> None:
    datamodule = ImageClassificationDataModule(dataset="cifar10-jpg", data_dir=str(DATA_DIR), cache_dir=str(tmp_path))
    datamodule.prepare_data()
    assert len(list((tmp_path / "images").glob("*.pt"))) == 2  # both zips decoded once, for every later setup
    datamodule._load_train_test = lambda: pytest.fail("setup read the files again after prepare_data")
    datamodule.setup()  # in the same process it reuses prepare_data's arrays
    assert len(datamodule.splits["test"]) == 10000  # the default test_size keeps the whole test zip


def test_cli_stops_with_exit_2_and_leaves_results_untouched(tmp_path: Path, capsys) -> None:
    root = corrupted_copy(MNIST, tmp_path / "data", "t10k-images-idx3-ubyte.gz", "truncate", 0.3)
    results = tmp_path / "results"
    (results / "kept").mkdir(parents=True)
    (results / "kept" / "seed-0.json").write_text("{}")
    code = main(["run", "doorping", "--profile", "smoke", "--datasets", "mnist-t10k-split", "--data-dir", str(root),
                 "--results", str(results), "--cache-dir", str(tmp_path / "cache"), "--wandb", "disabled"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "t10k-images-idx3-ubyte.gz cannot be read" in err and "\n" not in err
    assert sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()) == ["kept/seed-0.json"]
