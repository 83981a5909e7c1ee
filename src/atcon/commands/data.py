"""``atcon data``: build the offline benchmarks, write few-shot split files, summarise a dataset.

Examples::

    atcon data build cluttered-fashion --out DIR --size 1 --seed 0
    atcon data build fashion-events --seed 0
    atcon data build shortcut-fashion --rho 0.9 --cue marker   # an object and a class-correlated cue
    atcon data split voc --root VOCdevkit/VOC2012 --per-class 4 --seed 0 --out split.json
    atcon data split images xrays.csv --per-class 8 --group-by subject --out split.json
    atcon data split clips --manifest clips.csv --per-class 16 --seed 0 --out split.json
    atcon data split benchmark cluttered-fashion --per-class 4 --out split.json
    atcon data info PATH          # which format it found, and images (or clips) per class
    atcon data info PATH --check  # ... and decode every file once, listing the bad ones
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``data`` subcommand and its own subcommands to the ``atcon`` parser.

    One function on purpose: the subcommand tree is declared in one place, in the order
    ``--help`` shows it; each block is a flat list of flags.
    """
    from atcon.commands._config import count_or_fraction
    from atcon.data.benchmarks import BENCHMARKS
    from atcon.data.fewshot import DEFAULT_VAL_SIZE
    from atcon.data.shortcut_fashion import CUE_KINDS

    parser = subparsers.add_parser("data", help="build benchmarks, write split files, inspect datasets")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")

    build = sub.add_parser("build", help="generate a built-in benchmark")
    build.add_argument("name", choices=list(BENCHMARKS), help="the built-in benchmark to generate")
    build.add_argument("--out", type=Path, default=None, help="output folder (default: cache folder)")
    build.add_argument("--size", type=float, default=1.0, help="multiplies the default counts (default 1)")
    build.add_argument("--seed", type=int, default=0, help="generator seed of the benchmark (default 0)")
    build.add_argument("--source", type=Path, default=None, help="folder of the Fashion-MNIST IDX files")
    build.add_argument("--force", action="store_true", help="regenerate a previous build in place")
    build.add_argument(
        "--rho",
        type=float,
        default=None,
        help="shortcut-fashion: share of training and validation images whose cue matches the class "
        "(default 0.95); the test cues are uniform, plus a cue-aligned test set",
    )
    build.add_argument(
        "--cue",
        choices=CUE_KINDS,
        default=None,
        help="shortcut-fashion: patch (a square in its class's colour) or marker (a bright glyph, like a "
        "radiograph's lead marker) (default: patch)",
    )
    build.set_defaults(func=cmd_build)

    split = sub.add_parser("split", help="write a few-shot split file (JSON)")
    kinds = split.add_subparsers(dest="split_kind", metavar="KIND", required=True)
    voc = kinds.add_parser("voc", help="VOC-layout images: val drawn from the train split, N per class")
    voc.add_argument(
        "--root",
        type=Path,
        required=True,
        help="VOC folder (with Annotations/, ImageSets/Main/, JPEGImages/)",
    )
    voc.add_argument(
        "--val-size",
        type=count_or_fraction,
        default=None,
        help="validation images drawn from the train split: a count or a fraction (default: "
        f"{DEFAULT_VAL_SIZE}, 500 on VOC2012)".replace("%", "%%"),
    )
    voc.add_argument(
        "--train-split",
        default="train",
        help="ImageSets/Main list the training pool is drawn from (default train)",
    )
    voc.add_argument("--val-split", default=None, help="use this split as validation instead of drawing")
    voc.add_argument(
        "--test-split", default="val", help="ImageSets/Main list used as the test set (default val)"
    )
    images = kinds.add_parser(
        "images",
        help="your images (class folders, CSV manifest, COCO file, VOC folder): the split `atcon train` draws",
    )
    images.add_argument("data", help="the --data of `atcon train`: its format is detected")
    images.add_argument(
        "--val-size",
        type=count_or_fraction,
        default=None,
        help=f"validation images drawn from the training pool: a count or a fraction (default: {DEFAULT_VAL_SIZE}; "
        "not used when the data gives a validation set)".replace("%", "%%"),
    )
    images.add_argument(
        "--group-by", choices=["subject"], default=None, help="subject-disjoint train/val/test sets"
    )
    images.add_argument(
        "--multi-label",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CSV/COCO: force multi- or single-label (default: multi-label when an image has several labels)",
    )
    clips = kinds.add_parser("clips", help="video clips: three subject-disjoint sets, N per class")
    clips.add_argument("--manifest", type=Path, required=True, help="CSV manifest or folder-per-class tree")
    bench = kinds.add_parser("benchmark", help="a built-in benchmark (generated if needed)")
    bench.add_argument("name", choices=list(BENCHMARKS), help="the built-in benchmark to split")
    bench.add_argument("--root", type=Path, default=None, help="benchmark folder (default: cache folder)")
    for p in (voc, images, clips, bench):
        p.add_argument("--per-class", type=int, required=True, help="labeled training samples per class")
        p.add_argument("--seed", type=int, default=0, help="seed of the drawn split (default 0)")
        p.add_argument("--out", type=Path, required=True, help="split file to write")
        p.set_defaults(func=cmd_split)

    info = sub.add_parser("info", help="say which format a path holds; count images or clips per class")
    info.add_argument(
        "root",
        type=Path,
        help="image class folders, CSV manifest, COCO file, VOC-layout folder, clip manifest or video "
        "folders, or a built-in benchmark's name (cluttered-fashion, fashion-events, shortcut-fashion)",
    )
    info.add_argument(
        "--split",
        default=None,
        help="VOC image sets, or given sets (train, val, test), to count, comma-separated (default: all)",
    )
    info.add_argument(
        "--check",
        action="store_true",
        help="also decode every image or clip once and list the bad files (exit status 1 if any)",
    )
    info.set_defaults(func=cmd_info)


def cmd_build(args: argparse.Namespace) -> int:
    """Generate a benchmark and print where it is."""
    from atcon._progress import interactive
    from atcon.data.benchmarks import timed_build

    live = interactive()

    def progress(done: int, total: int) -> None:
        # A counter that redraws itself on a terminal; in a log, one line when done.
        if live and (done == total or done % max(1, total // 20) == 0):
            print(f"\r{args.name}: {done}/{total}", end="", file=sys.stderr, flush=True)
        elif not live and done == total:
            print(f"{args.name}: {done}/{total}", end="", file=sys.stderr, flush=True)

    from atcon.data.benchmarks import benchmark_options

    given = {k: getattr(args, k) for k in ("rho", "cue") if getattr(args, k) is not None}
    unusable = sorted(set(given) - set(benchmark_options(args.name)))
    if unusable:
        raise ValueError(f"--{unusable[0]} applies to shortcut-fashion only, not {args.name}")
    path, seconds = timed_build(
        args.name,
        out=args.out,
        seed=args.seed,
        size=args.size,
        source_root=args.source,
        force=args.force,
        progress=progress,
        options=given or None,
    )
    print(file=sys.stderr)
    print(f"{args.name} ready in {path} ({seconds:.1f} s)")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Compute a few-shot split and save it."""
    from atcon.data.fewshot import clip_fewshot_split, voc_fewshot_split
    from atcon.data.split import Split

    split: Split
    if args.split_kind == "voc":
        split = voc_fewshot_split(
            args.root,
            args.per_class,
            args.seed,
            val_size=args.val_size,
            train_split=args.train_split,
            val_split=args.val_split,
            test_split=args.test_split,
        )
    elif args.split_kind == "images":
        from atcon.train.config import TrainConfig
        from atcon.train.data import task_split

        cfg = TrainConfig(
            data=str(args.data),
            per_class=args.per_class,
            split_seed=args.seed,
            val_size=args.val_size,
            group_by=args.group_by,
            multi_label=args.multi_label,
        )
        split = task_split(cfg)
    elif args.split_kind == "clips":
        from atcon.data.video import VideoClipDataset

        ds = VideoClipDataset(args.manifest, probe=False)
        split = clip_fewshot_split(
            ds.ids,
            ds.labels,
            ds.subjects,
            args.per_class,
            args.seed,
            classes=ds.classes,
            meta={"source": str(args.manifest)},
        )
    else:
        from atcon.data.benchmarks import benchmark_split

        split = benchmark_split(args.name, args.per_class, args.seed, root=args.root)
    split.save(args.out)
    how = split.protocol + (f", validation {split.meta['val_rule']}" if "val_rule" in split.meta else "")
    print(f"{args.out}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)} ({how})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Say which format a path holds, then count its images (or clips) per class (and, with
    ``--check``, list its bad files). A built-in benchmark's name stands for its default build
    (made first if needed, as ``--data NAME`` does)."""
    args.root = _builtin_path(args.root)
    if not args.check:
        return _counts(args)
    status = _check(args.root.expanduser())
    try:
        return _counts(args) or status
    except (ValueError, FileNotFoundError) as err:
        if not status:
            raise
        print(f"no per-class counts: {err}")  # the same bad file the check listed
        return status


def _builtin_path(root: Path) -> Path:
    """``root``, or the folder (or manifest) of the built-in benchmark it names, when no such path exists."""
    from atcon.data import BENCHMARKS, build_benchmark

    name = str(root)
    if root.exists() or name not in BENCHMARKS:
        return root
    folder = build_benchmark(name)
    return folder / "manifest.csv" if BENCHMARKS[name].layout == "manifest" else folder


def _check(root: Path) -> int:
    from atcon.data.check import check_files

    report = check_files(root)
    if report.ok:
        print(f"{report.path}: all {report.checked} {report.what} decode")
        return 0
    print(
        f"{report.path}: {len(report.bad)} of {report.checked} {report.what} are bad "
        "(--on-bad-file skip leaves them out):"
    )
    for err in report.bad:
        print(f"  {err}")
    return 1


def _counts(args: argparse.Namespace) -> int:
    from atcon.data.formats import detect_data

    found = detect_data(args.root)
    print(f"{found.path}: {found.description}")
    if found.video:
        from atcon.data.video import VideoClipDataset

        ds = VideoClipDataset(found.path, probe=False)
        counts = Counter(ds.labels)
        print(f"{found.path}: {len(ds)} clips, {len(set(ds.subjects))} subjects, {len(ds.classes)} classes")
        _table({"clips": {c: counts.get(i, 0) for i, c in enumerate(ds.classes)}})
        return 0
    if found.format != "voc":
        return _own_images_info(found.path, args.split)
    from atcon.data.voc import VOCDataset, class_counts

    voc_root = found.path
    if args.split:
        splits = args.split.split(",")
    else:
        splits = sorted(p.stem for p in (voc_root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
    columns = {}
    for name in splits:
        voc = VOCDataset(voc_root, name)
        columns[f"{name} ({len(voc)})"] = class_counts(voc)
    print(f"{voc_root}: images per class (difficult-only excluded)")
    _table(columns)
    return 0


def _own_images_info(path: Path, wanted: str | None) -> int:
    """Describe class folders, a CSV manifest or a COCO file, and count images per class and given set."""
    from atcon.data.formats import open_image_dataset
    from atcon.data.images import SPLIT_NAMES, AnnotatedImageDataset

    ds = open_image_dataset(path)
    assert isinstance(ds, AnnotatedImageDataset)  # VOC folders are counted by image set
    print(ds.describe())
    labels = ds.label_matrix()
    given = [s for s in SPLIT_NAMES if s in ds.splits]
    names = wanted.split(",") if wanted else ["all", *given]
    unknown = [n for n in names if n not in ("all", *SPLIT_NAMES)]
    if unknown:
        raise ValueError(f"--split {unknown[0]!r}: this data's sets are all, {', '.join(SPLIT_NAMES)}")
    columns = {}
    for name in names:
        rows = [i for i, s in enumerate(ds.splits) if name == "all" or s == name]
        totals = labels[rows].sum(0) if rows else labels.new_zeros(ds.num_classes)
        columns[f"{name} ({len(rows)})"] = {c: int(n) for c, n in zip(ds.classes, totals.tolist())}
    print("images per class" + (" (difficult-only excluded)" if ds.multi_label else ""))
    _table(columns)
    return 0


def _table(columns: dict[str, dict[str, int]]) -> None:
    rows = list(next(iter(columns.values()))) if columns else []
    width = max([len(r) for r in rows] + [5])
    print(" " * width + "".join(f"  {h:>12}" for h in columns))
    for r in rows:
        print(f"{r:<{width}}" + "".join(f"  {col[r]:>12}" for col in columns.values()))
