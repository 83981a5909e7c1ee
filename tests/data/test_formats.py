"""Format detection, opening any image format, and 16-bit greyscale decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atcon.data import (
    COCODataset,
    DataError,
    ImageFolderDataset,
    ImageManifestDataset,
    Split,
    VOCDataset,
    detect_data,
    detect_format,
    image_fewshot_split,
    open_image_dataset,
)
from atcon.data._common import read_image_rgb
from tests.data.userdata import (
    multilabel_set,
    single_label_set,
    write_coco,
    write_csv,
    write_folders,
    write_voc,
)


def test_every_format_is_detected(tmp_path: Path) -> None:
    images = single_label_set()
    voc = write_voc(tmp_path / "VOCdevkit" / "VOC2012", images)
    assert detect_data(tmp_path / "VOCdevkit") == detect_data(voc)
    assert detect_format(tmp_path / "VOCdevkit") == "voc" and detect_data(tmp_path / "VOCdevkit").path == voc
    assert detect_format(write_folders(tmp_path / "folders", images)) == "folders"
    assert detect_format(write_folders(tmp_path / "sets", images, split=True)) == "folders"
    csv_path = write_csv(tmp_path / "csv" / "manifest.csv", images)
    assert detect_format(csv_path) == "csv"
    found = detect_data(csv_path.parent)  # a folder holding manifest.csv
    assert (found.format, found.path, found.video) == ("csv", csv_path, False)
    assert "CSV image manifest" in str(found)
    assert detect_format(write_coco(tmp_path / "coco" / "instances.json", images)) == "coco"


def test_image_and_clip_manifests_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("path,label,subject\nv/a.MP4,walk,p1\nv/b.avi,run,p2\n")
    assert detect_format(path) == "clips-csv" and detect_data(path).video
    path.write_text("path,label,subject\nimg/a.JPG,walk,p1\n")
    assert detect_format(path) == "csv"  # a single-label image manifest may say label
    path.write_text("path,labels\n")
    assert detect_format(path) == "csv"  # no rows: the columns decide
    path.write_text("path,label,subject,start,end\nclip_0001,walk,p1,0,4\n")
    assert detect_format(path) == "clips-csv"
    path.write_text("path,label\na.png,x\nb.mp4,y\n")
    with pytest.raises(DataError, match=r"lists both images \(line 2\) and videos \(line 3\)"):
        detect_format(path)
    path.write_text("path,label\na.dcm,x\n")
    with pytest.raises(
        DataError, match=r"paths have no image \(.*\) or video \(.*\) suffix. Looked for a VOC"
    ):
        detect_format(path)
    path.write_text("file,label\na.png,x\n")
    with pytest.raises(DataError, match=r"a CSV without a path column \(columns: file, label\)"):
        detect_format(path)
    video = tmp_path / "clips" / "walk" / "a.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"")
    assert detect_format(tmp_path / "clips") == "clip-folders"


def test_unknown_inputs_list_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data not found"):
        detect_format(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError,
        match=r"no image \(\.jpg.*\) or video \(\.mp4.*\) files in subfolders. Looked for a VOC layout .*COCO",
    ):
        detect_format(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"a \.txt file\. Looked for"):
        detect_format(tmp_path / "x.txt")
    split = Split(["a"], ["b"], ["c"], ["k"], 1, 0, "image-fewshot").save(tmp_path / "split.json")
    with pytest.raises(DataError, match="this is a split file; pass it as the split"):
        detect_format(split)
    (tmp_path / "other.json").write_text(json.dumps({"hello": [1, 2]}))
    with pytest.raises(DataError, match="a JSON file without images, annotations or categories"):
        detect_format(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not a JSON file"):
        detect_format(tmp_path / "broken.json")


def test_open_image_dataset_picks_the_reader(tmp_path: Path) -> None:
    images = multilabel_set()
    voc = open_image_dataset(write_voc(tmp_path / "voc", images), split="all")
    assert isinstance(voc, VOCDataset) and len(voc) == len(images)
    csv = open_image_dataset(write_csv(tmp_path / "csv" / "m.csv", images), ids=["images/a02.png"])
    assert isinstance(csv, ImageManifestDataset) and csv.ids == ["images/a02.png"]
    coco = open_image_dataset(write_coco(tmp_path / "coco" / "i.json", images), difficult_as_positive=True)
    assert isinstance(coco, COCODataset) and coco.label_matrix()[2].tolist() == [1, 0, 1]
    folders = open_image_dataset(write_folders(tmp_path / "f", single_label_set(), subjects=False))
    assert isinstance(folders, ImageFolderDataset)
    with pytest.raises(DataError, match="class folders hold single-label images"):
        open_image_dataset(tmp_path / "f", multi_label=True)
    with pytest.raises(DataError, match="VOC-layout data are multi-label"):
        open_image_dataset(tmp_path / "voc", multi_label=False)
    (tmp_path / "clips.csv").write_text("path,label,subject\na.mp4,x,p\n")
    with pytest.raises(DataError, match=r"holds video clips .* read it with VideoClipDataset"):
        open_image_dataset(tmp_path / "clips.csv")
    # The split function opens paths the same way.
    by_path = image_fewshot_split(tmp_path / "f", per_class=1, seed=0, val_size=3)
    assert by_path == image_fewshot_split(folders, per_class=1, seed=0, val_size=3)
    with pytest.raises(ValueError, match="for a VOC-layout folder use voc_fewshot_split"):
        image_fewshot_split(tmp_path / "voc", per_class=1)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 1000], [4095, 30000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "xray.png")
    with Image.open(tmp_path / "xray.png") as im:
        assert im.mode.startswith("I")  # Pillow keeps the 16 bits
    image = read_image_rgb(tmp_path / "xray.png")
    want = torch.from_numpy(np.rint(values / 257.0).astype(np.uint8))
    assert image.dtype == torch.uint8 and image.shape == (3, 2, 3)
    assert all(torch.equal(image[c], want) for c in range(3))
    assert want.tolist() == [[0, 1, 4], [16, 117, 255]]
