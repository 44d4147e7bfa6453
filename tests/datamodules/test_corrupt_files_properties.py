"""Property tests over the remaining readers (Planetoid and MNIST have their own files): whatever a
truncation, an emptying, a garble or a renamed column does to a small real file, prepare_data (the
pre-run check) either accepts it unchanged or stops with one line that names the file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from datamodules.coco_instances import CocoInstanceSegmentationDataModule
from datamodules.fairness_graphs import FairGraphDataModule
from datamodules.grooves import GrooveDataModule
from tests_support import damage_file, shared_data_root, writable_copy

EXAMPLES = settings(max_examples=int(os.environ.get("LITBENCH_HYPOTHESIS_EXAMPLES", 12)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DAMAGE = st.sampled_from(["truncate", "empty", "garble", "rename a column"])


def damaged_copy(source: Path, root: Path, file_name: str, how: str, where: float) -> Path:
    target = writable_copy(source, root / source.name) / file_name
    if how == "rename a column":  # the first header field (csv) or the first key (json)
        original = target.read_bytes()
        target.write_bytes(original.replace(b",", b"_x,", 1) if file_name.endswith(".csv")
                           else original.replace(b'"', b'"x_', 1))
    else:
        original = damage_file(target, how, where)
    assume(target.read_bytes() != original)  # e.g. no header to rename in an edge list: nothing to test
    return root


def assert_one_line_naming(error: BaseException, file_name: str) -> None:
    message = str(error)
    assert "\n" not in message and file_name in message, message


@EXAMPLES
@given(file_name=st.sampled_from(["german.csv", "german_edges.txt"]), how=DAMAGE, where=st.floats(0.0, 0.99))
def test_nifty_files(tmp_path_factory, file_name: str, how: str, where: float) -> None:
    source = shared_data_root("fair_german/german.csv") / "fair_german"
    root = damaged_copy(source, tmp_path_factory.mktemp("data"), file_name, how, where)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        FairGraphDataModule(dataset="German", data_dir=str(root), cache_dir=str(root / "cache")).prepare_data()
    assert_one_line_naming(error.value, file_name)


@EXAMPLES
@given(how=DAMAGE, where=st.floats(0.0, 0.99))
def test_gmd_info_csv(tmp_path_factory, how: str, where: float) -> None:
    source = shared_data_root("groove_midi/groove-midionly.zip") / "groove_midi"
    root = tmp_path_factory.mktemp("data")
    (root / "groove_midi").mkdir()
    for name in ("info.csv", "groove-midionly.zip"):
        shutil.copyfile(source / name, root / "groove_midi" / name)
    damaged_copy(root / "groove_midi", root / "copy", "info.csv", how, where)
    with pytest.raises(ValueError) as error:
        GrooveDataModule(dataset="gmd-paper", data_dir=str(root / "copy"), cache_dir=str(root / "cache")).prepare_data()
    assert_one_line_naming(error.value, "info.csv")


@EXAMPLES
@given(how=DAMAGE, where=st.floats(0.0, 0.99))
def test_coco_json(tmp_path_factory, how: str, where: float) -> None:
    fruits = "coco_fruits_nuts/trainval.json"
    source = shared_data_root(fruits) / "coco_fruits_nuts"
    root = damaged_copy(source, tmp_path_factory.mktemp("data"), "trainval.json", how, where)
    datamodule = CocoInstanceSegmentationDataModule(dataset="coco-json", data_dir=str(root), train_json=fruits,
                                                    test_json=fruits, novel_classes=["fig"])
    try:
        datamodule.prepare_data()
    except (ValueError, FileNotFoundError) as error:
        assert_one_line_naming(error, "trainval.json" if how != "garble" else "")
    else:  # a renamed optional key ("info") or a garbled string value can leave a valid COCO json:
        datamodule.setup()  # then the set must read whole
        assert datamodule.num_classes == 3
