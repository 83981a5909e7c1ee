from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from atcon.data import VOC_CLASSES, DataError, VOCDataset, collate, parse_voc_xml, read_image_set
from atcon.data.voc import class_counts, find_voc_root, read_vocabulary


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_parse_converts_one_based_inclusive_boxes(voc_root: Path) -> None:
    ann = parse_voc_xml(voc_root / "Annotations" / "img1.xml")
    assert (ann.width, ann.height) == (60, 40)
    cat, dog = ann.objects
    assert cat.name == "cat" and cat.box == (10.0, 5.0, 30.0, 25.0) and not cat.difficult
    assert dog.difficult and dog.box == (30.0, 0.0, 60.0, 40.0)


def test_root_found_from_devkit_folder(voc_root: Path) -> None:
    assert find_voc_root(voc_root.parent.parent) == voc_root
    assert read_image_set(voc_root.parent, "val") == ["img5", "img6"]


def test_vocabulary_voc_names_keep_official_order(voc_root: Path) -> None:
    assert read_vocabulary(voc_root) == VOC_CLASSES


def test_vocabulary_other_names_sorted_or_from_classes_txt(voc_root: Path) -> None:
    xml = voc_root / "Annotations" / "img4.xml"
    xml.write_text(xml.read_text().replace("person", "zebra"))
    (voc_root / "Annotations" / "broken.xml").unlink()
    assert read_vocabulary(voc_root) == ("cat", "dog", "person", "zebra")
    (voc_root / "classes.txt").write_text("zebra\ncat\ndog\nperson\n")
    assert read_vocabulary(voc_root) == ("zebra", "cat", "dog", "person")


def test_item_image_and_target(voc_root: Path) -> None:
    ds = VOCDataset(voc_root, "train")
    assert len(ds) == 4 and ds.num_classes == 20
    image, target = ds[0]
    expected = torch.from_numpy(np.array(Image.open(voc_root / "JPEGImages" / "img1.png"))).permute(2, 0, 1)
    assert image.dtype == torch.float32 and image.shape == (3, 40, 60)
    torch.testing.assert_close(image, expected.float() / 255)
    cat, dog = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")
    # dog is only present as a difficult object: not positive, ignored (VOC's "0" label).
    assert target["labels"].nonzero().flatten().tolist() == [cat]
    assert target["ignore"].nonzero().flatten().tolist() == [dog]
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].canvas_size == (40, 60)
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor), torch.tensor([[10.0, 5, 30, 25], [30, 0, 60, 40]])
    )
    assert target["box_labels"].tolist() == [cat, dog]
    assert target["difficult"].tolist() == [False, True]
    assert target["image_id"] == "img1"
    assert target["orig_size"].tolist() == [40, 60]


def test_difficult_as_positive(voc_root: Path) -> None:
    ds = VOCDataset(voc_root, "train", difficult_as_positive=True)
    labels = ds.label_matrix()
    assert labels[0, VOC_CLASSES.index("dog")] == 1
    assert not ds.target(0)["ignore"].any()


def test_label_matrix_and_counts_match_items(voc_root: Path) -> None:
    ds = VOCDataset(voc_root, "train", classes=["cat", "dog", "person"])
    matrix = ds.label_matrix()
    assert matrix.shape == (4, 3)
    assert torch.equal(matrix, torch.stack([ds[i][1]["labels"] for i in range(len(ds))]))
    # img1 cat (+difficult dog), img2 dog+person, img3 cat (+difficult person), img4 person
    assert class_counts(ds) == {"cat": 2, "dog": 1, "person": 2}


def test_ids_select_and_order(voc_root: Path) -> None:
    ds = VOCDataset(voc_root, ids=["img6", "img2"], classes=["cat", "dog", "person"])
    assert ds.ids == ["img6", "img2"]
    assert ds[0][1]["image_id"] == "img6"


def test_missing_split_and_folder_named(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/test\.txt.*available: .*train"):
        VOCDataset(voc_root, "test")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a VOC-layout"):
        VOCDataset(tmp_path / "empty")


def test_corrupt_image_raises_naming_file_or_is_skipped(voc_root: Path) -> None:
    ds = VOCDataset(voc_root, "withcorrupt")
    with pytest.raises(DataError, match=r"corrupt\.jpg"):
        ds[1]
    with pytest.warns(UserWarning, match=r"skipped 1 bad images.*corrupt\.jpg"):
        ds = VOCDataset(voc_root, "withcorrupt", on_error="skip")
    assert ds.ids == ["img1", "img2"] and len(ds.skipped) == 1


def test_malformed_xml_raises_naming_file_or_is_skipped(voc_root: Path) -> None:
    with pytest.raises(DataError, match=r"broken\.xml: malformed XML"):
        VOCDataset(voc_root, "withbroken")
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = VOCDataset(voc_root, "withbroken", on_error="skip")
    assert ds.ids == ["img1"]


def test_unknown_class_raises_naming_file(voc_root: Path) -> None:
    xml = voc_root / "Annotations" / "img2.xml"
    (voc_root / "Annotations" / "alien.xml").write_text(xml.read_text().replace("person", "unicorn"))
    (voc_root / "ImageSets" / "Main" / "withalien.txt").write_text("img1\nalien\n")
    with pytest.raises(DataError, match=r"alien\.xml: unknown class 'unicorn'"):
        VOCDataset(voc_root, "withalien", classes=VOC_CLASSES)


def test_missing_image_named(voc_root: Path) -> None:
    (voc_root / "JPEGImages" / "img2.jpg").unlink()
    ds = VOCDataset(voc_root, "train")
    with pytest.raises(FileNotFoundError, match=r"img2\.jpg"):
        ds[1]


def test_bad_on_error_value_rejected(voc_root: Path) -> None:
    with pytest.raises(ValueError, match="on_error"):
        VOCDataset(voc_root, "train", on_error="ignore")  # type: ignore[arg-type]


def test_reading_never_writes_into_dataset(voc_root: Path) -> None:
    before = snapshot(voc_root.parent.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for split in ("train", "withcorrupt", "withbroken"):
            ds = VOCDataset(voc_root, split, on_error="skip")
            for i in range(len(ds)):
                ds[i]
    assert snapshot(voc_root.parent.parent) == before
    assert not any(name.endswith((".cache", ".pkl", ".json")) for name in os.listdir(voc_root))


def test_collate_keeps_variable_boxes_as_lists(voc_root: Path) -> None:
    from atcon.data import image_eval_transform

    ds = VOCDataset(voc_root, "train", classes=["cat", "dog", "person"], transform=image_eval_transform(32))
    images, targets = collate([ds[0], ds[3]])
    assert images.shape == (2, 3, 32, 32) and type(images) is torch.Tensor
    assert targets["labels"].shape == (2, 3)
    assert targets["orig_size"].tolist() == [[40, 60], [40, 30]]
    assert [len(b) for b in targets["boxes"]] == [2, 1]
    assert targets["image_id"] == ["img1", "img4"]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    batch_images, batch_targets = next(iter(loader))
    assert batch_images.shape == (4, 3, 32, 32) and len(batch_targets["box_labels"]) == 4


def test_cached_datasets_share_decoded_images(voc_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atcon.data import decoded, reading

    decoded.clear()
    first = VOCDataset(voc_root, "train", cache=True)
    first.preload()
    assert decoded.size() == len(first)
    expected = first[0][0]

    def fail(path: object) -> None:
        raise AssertionError(f"decoded again: {path}")

    monkeypatch.setattr(reading, "read_image_rgb", fail)  # where every reader decodes
    # Another dataset over the same files, with another transform: no decoding.
    other = VOCDataset(voc_root, "train", cache=True, transform=lambda img, tgt: (img.flip(-1), tgt))
    assert torch.equal(other[0][0], tv_tensors.Image((expected * 255).round().to(torch.uint8)).flip(-1))
    uncached = VOCDataset(voc_root, "train")
    with pytest.raises(AssertionError, match="decoded again"):
        uncached[0]
    decoded.clear()
    assert decoded.size() == 0


def test_a_box_outside_the_image_names_the_annotation(voc_root: Path) -> None:
    """img2 is 50 x 50: a box to x = 80 is refused, not scored against pixels that do not exist."""
    xml = voc_root / "Annotations" / "img2.xml"
    xml.write_text(xml.read_text().replace("<xmax>50</xmax>", "<xmax>80</xmax>"))
    ds = VOCDataset(voc_root, "train", classes=VOC_CLASSES)
    with pytest.raises(
        DataError, match=r"img2\.xml: box 2 \(person\) \[20, 20, 80, 50\] lies outside the 50 x 50 image"
    ):
        ds[1]
