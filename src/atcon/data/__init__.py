"""Data layer: VOC-layout images, class folders, CSV manifests, COCO files, video clips, few-shot splits,
built-in benchmarks.

Everything a training script needs::

    from atcon import data

    train = data.load_benchmark("cluttered-fashion", "train", transform=data.image_train_transform(256))
    split = data.benchmark_split("cluttered-fashion", per_class=4, seed=0)
    voc = data.VOCDataset("~/VOCdevkit/VOC2012", ids=split.train, transform=data.image_eval_transform())
    loader = torch.utils.data.DataLoader(voc, batch_size=4, collate_fn=data.collate)

The user's own images, in any format (:func:`detect_format`), give the same items::

    mine = data.open_image_dataset("xrays.csv")  # or a class-folder root, or instances.json
    split = data.image_fewshot_split(mine, per_class=8, seed=0, group_by="subject")
    train = data.open_image_dataset("xrays.csv", ids=split.train, transform=data.image_train_transform(224))
"""

from atcon.data._common import DataError, default_data_dir
from atcon.data.benchmarks import BENCHMARKS, benchmark_dir, benchmark_split, build_benchmark, load_benchmark
from atcon.data.cluttered_fashion import ClutteredFashionConfig, generate_cluttered_fashion
from atcon.data.coco import COCODataset, read_coco
from atcon.data.fashion import FASHION_MNIST_CLASSES, FASHION_MNIST_TITLES, load_fashion_mnist, read_idx
from atcon.data.fashion_events import EVENTS, FashionEventsConfig, generate_fashion_events
from atcon.data.fewshot import (
    DEFAULT_VAL_SIZE,
    clip_fewshot_split,
    max_per_class,
    sample_per_class,
    subject_disjoint_split,
    val_count,
    voc_fewshot_split,
)
from atcon.data.files import IMAGE_SUFFIXES, VIDEO_SUFFIXES, collect_files, load_images
from atcon.data.folders import ImageFolderDataset, scan_image_folders
from atcon.data.formats import FORMATS, DetectedData, detect_data, detect_format, open_image_dataset
from atcon.data.image_splits import image_fewshot_split
from atcon.data.images import AnnotatedImageDataset, ImageRecord
from atcon.data.manifest import ImageManifestDataset, read_image_manifest
from atcon.data.split import Split, with_unlabeled_pool
from atcon.data.transforms import (
    IMAGE_SIZE,
    IMAGENET,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    Preprocess,
    RandomCropFraction,
    clip_eval_transform,
    clip_simclr_transform,
    clip_train_transform,
    denormalize,
    image_eval_transform,
    image_train_transform,
)
from atcon.data.video import ClipSpec, VideoClipDataset, decode_clip, read_manifest, scan_class_folders
from atcon.data.voc import VOC_CLASSES, VOCDataset, class_counts, collate, parse_voc_xml, read_image_set

__all__ = [
    "BENCHMARKS",
    "DEFAULT_VAL_SIZE",
    "EVENTS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_TITLES",
    "FORMATS",
    "IMAGENET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SIZE",
    "IMAGE_SUFFIXES",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "VIDEO_SUFFIXES",
    "VOC_CLASSES",
    "AnnotatedImageDataset",
    "COCODataset",
    "ClipSpec",
    "ClutteredFashionConfig",
    "DataError",
    "DetectedData",
    "FashionEventsConfig",
    "ImageFolderDataset",
    "ImageManifestDataset",
    "ImageRecord",
    "Preprocess",
    "RandomCropFraction",
    "Split",
    "VOCDataset",
    "VideoClipDataset",
    "benchmark_dir",
    "benchmark_split",
    "build_benchmark",
    "class_counts",
    "clip_eval_transform",
    "clip_fewshot_split",
    "clip_simclr_transform",
    "clip_train_transform",
    "collate",
    "collect_files",
    "decode_clip",
    "default_data_dir",
    "denormalize",
    "detect_data",
    "detect_format",
    "generate_cluttered_fashion",
    "generate_fashion_events",
    "image_eval_transform",
    "image_fewshot_split",
    "image_train_transform",
    "load_benchmark",
    "load_fashion_mnist",
    "load_images",
    "max_per_class",
    "open_image_dataset",
    "parse_voc_xml",
    "read_coco",
    "read_idx",
    "read_image_manifest",
    "read_image_set",
    "read_manifest",
    "sample_per_class",
    "scan_class_folders",
    "scan_image_folders",
    "subject_disjoint_split",
    "val_count",
    "voc_fewshot_split",
    "with_unlabeled_pool",
]
