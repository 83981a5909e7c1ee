"""One options object for every image reader, and the shared decoding through the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atcon.data import DataError, decoded, open_image_dataset
from atcon.data.folders import ImageFolderDataset
from atcon.data.images import AnnotatedImageDataset
from atcon.data.manifest import ImageManifestDataset
from atcon.data.reading import ReaderOptions, reader_options
from atcon.data.voc import VOCDataset
from tests.data.userdata import multilabel_set, single_label_set, write_csv, write_folders


def test_keywords_override_the_options_object() -> None:
    base = ReaderOptions(classes=("a", "b"), cache=True)
    opts = reader_options(base, {"on_error": "skip", "cache": False})
    assert opts == ReaderOptions(classes=("a", "b"), on_error="skip", cache=False)
    assert reader_options(None, {}) == ReaderOptions()


def test_bad_options_fail_early() -> None:
    with pytest.raises(ValueError, match="on_error"):
        ReaderOptions(on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="labels_sep"):
        reader_options(None, {"labels_sep": "|"})  # type: ignore[typeddict-unknown-key]


def test_options_object_and_keywords_read_the_same(voc_root: Path, tmp_path: Path) -> None:
    by_kw = VOCDataset(voc_root, ids=["img2", "img1"], classes=("cat", "dog", "person"))
    by_opts = VOCDataset(
        voc_root, options=ReaderOptions(ids=["img2", "img1"], classes=("cat", "dog", "person"))
    )
    assert by_kw.ids == by_opts.ids == ["img2", "img1"]
    assert torch.equal(by_kw.label_matrix(), by_opts.label_matrix())
    manifest = write_csv(tmp_path / "m.csv", multilabel_set())
    a = ImageManifestDataset(manifest, multi_label=True, difficult_as_positive=True)
    b = open_image_dataset(manifest, options=ReaderOptions(multi_label=True, difficult_as_positive=True))
    assert isinstance(b, AnnotatedImageDataset) and a.ids == b.ids
    assert torch.equal(a.label_matrix(), b.label_matrix())


def test_readers_refuse_the_other_label_mode(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="multi-label"):
        VOCDataset(voc_root, multi_label=False)
    with pytest.raises(DataError, match="single-label"):
        ImageFolderDataset(write_folders(tmp_path / "f", single_label_set()), multi_label=True)


def test_preload_fills_the_shared_store_for_both_kinds(voc_root: Path, tmp_path: Path) -> None:
    decoded.clear()
    voc = VOCDataset(voc_root, "train")
    voc.preload()
    assert voc.cache and decoded.size() == len(voc)
    folders = ImageFolderDataset(write_folders(tmp_path / "f", single_label_set()))
    folders.preload()
    assert decoded.size() == len(voc) + len(folders)
    decoded.clear()


def test_keywords_and_options_name_the_same_settings() -> None:
    from dataclasses import fields

    from atcon.data.reading import ReaderKeywords

    assert list(ReaderKeywords.__annotations__) == [f.name for f in fields(ReaderOptions)]
