"""``data_source``: a config's data as one source object, its options checked against the kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from atcon.data import DataError
from atcon.data.sources import BenchmarkClips, BenchmarkImages, ManifestBenchmark, UserImages, VOCFolder
from atcon.train.config import TrainConfig
from atcon.train.data import data_source, task_split, training_pool_ids
from tests.data.userdata import single_label_set, write_folders


def test_each_kind_gets_its_source(tiny_voc: Path, tmp_path: Path) -> None:
    assert isinstance(data_source(TrainConfig(data=str(tiny_voc))), VOCFolder)
    folders = write_folders(tmp_path / "f", single_label_set())
    source = data_source(TrainConfig(data=str(folders), on_bad_file="skip"))
    assert isinstance(source, UserImages) and source.on_error == "skip"
    assert type(data_source(TrainConfig(data="cluttered-fashion"))) is BenchmarkImages
    clips = data_source(TrainConfig(data="fashion-events"), frame_size=(16, 16))
    assert isinstance(clips, BenchmarkClips) and clips.frame_size == (16, 16)
    # Built lazily: naming the manifest benchmark generates nothing yet.
    assert isinstance(data_source(TrainConfig(data="shortcut-fashion")), ManifestBenchmark)


def test_wrappers_answer_as_the_source(tiny_voc: Path) -> None:
    cfg = TrainConfig(data=str(tiny_voc), per_class=2, split_seed=3)
    split = task_split(cfg)
    source = data_source(cfg)
    assert split == source.split(2, 3)
    assert training_pool_ids(cfg, split) == source.pool_ids(split)


def test_options_that_do_not_apply_are_refused(tiny_voc: Path) -> None:
    with pytest.raises(ValueError, match="multi_label applies to CSV manifests"):
        data_source(TrainConfig(data=str(tiny_voc), multi_label=True))
    with pytest.raises(ValueError, match="val_size does not apply"):
        data_source(TrainConfig(data="fashion-events", val_size=3))
    with pytest.raises(DataError, match="needs subject ids"):
        data_source(TrainConfig(data=str(tiny_voc), group_by="subject"))
