"""``atcon data``: build the offline benchmarks, write few-shot split files, summarise a dataset.

Examples::

    atcon data build cluttered-fashion --out DIR --size 1 --seed 0
    atcon data build fashion-events --seed 0
    atcon data split voc --root VOCdevkit/VOC2012 --per-class 4 --seed 0 --out split.json
    atcon data split clips --manifest clips.csv --per-class 16 --seed 0 --out split.json
    atcon data split benchmark cluttered-fashion --per-class 4 --out split.json
    atcon data info ROOT
    atcon data info ROOT --check
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``data`` subcommand and its own subcommands to the ``atcon`` parser."""
    parser = subparsers.add_parser("data", help="build benchmarks, write split files, inspect datasets")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")

    build = sub.add_parser("build", help="generate a built-in benchmark")
    build.add_argument("name", choices=["cluttered-fashion", "fashion-events"])
    build.add_argument("--out", type=Path, default=None, help="output folder (default: cache folder)")
    build.add_argument("--size", type=float, default=1.0, help="multiplies the default counts (default 1)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--source", type=Path, default=None, help="folder of the Fashion-MNIST IDX files")
    build.add_argument("--force", action="store_true", help="regenerate a previous build in place")
    build.set_defaults(func=cmd_build)

    split = sub.add_parser("split", help="write a few-shot split file (JSON)")
    kinds = split.add_subparsers(dest="split_kind", metavar="KIND", required=True)
    voc = kinds.add_parser("voc", help="VOC-layout images: val drawn from the train split, N per class")
    voc.add_argument("--root", type=Path, required=True)
    voc.add_argument("--val-size", type=int, default=500)
    voc.add_argument("--train-split", default="train")
    voc.add_argument("--val-split", default=None, help="use this split as validation instead of drawing")
    voc.add_argument("--test-split", default="val")
    clips = kinds.add_parser("clips", help="video clips: three subject-disjoint sets, N per class")
    clips.add_argument("--manifest", type=Path, required=True, help="CSV manifest or folder-per-class tree")
    bench = kinds.add_parser("benchmark", help="a built-in benchmark (generated if needed)")
    bench.add_argument("name", choices=["cluttered-fashion", "fashion-events"])
    bench.add_argument("--root", type=Path, default=None, help="benchmark folder (default: cache folder)")
    for p in (voc, clips, bench):
        p.add_argument("--per-class", type=int, required=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", type=Path, required=True, help="split file to write")
        p.set_defaults(func=cmd_split)

    info = sub.add_parser("info", help="count images or clips per class")
    info.add_argument("root", type=Path, help="VOC-layout folder, clip manifest, or folder-per-class tree")
    info.add_argument("--split", default=None, help="VOC split(s) to count, comma-separated (default: all)")
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

    path, seconds = timed_build(
        args.name,
        out=args.out,
        seed=args.seed,
        size=args.size,
        source_root=args.source,
        force=args.force,
        progress=progress,
    )
    print(file=sys.stderr)
    print(f"{args.name} ready in {path} ({seconds:.1f} s)")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Compute a few-shot split and save it."""
    from atcon.data.fewshot import Split, clip_fewshot_split, voc_fewshot_split

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
    print(f"{args.out}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print per-class counts of a dataset (and, with ``--check``, its bad files)."""
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
    root: Path = args.root.expanduser()
    if root.is_dir() and (root / "manifest.csv").is_file():
        root = root / "manifest.csv"
    if root.is_file() or not _looks_voc(root):
        from atcon.data.video import VideoClipDataset

        ds = VideoClipDataset(root, probe=False)
        counts = Counter(ds.labels)
        print(f"{root}: {len(ds)} clips, {len(set(ds.subjects))} subjects, {len(ds.classes)} classes")
        _table({"clips": {c: counts.get(i, 0) for i, c in enumerate(ds.classes)}})
        return 0
    from atcon.data.voc import VOCDataset, class_counts, find_voc_root

    voc_root = find_voc_root(root)
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


def _looks_voc(root: Path) -> bool:
    try:
        from atcon.data.voc import find_voc_root

        find_voc_root(root)
    except FileNotFoundError:
        return False
    return True


def _table(columns: dict[str, dict[str, int]]) -> None:
    rows = list(next(iter(columns.values()))) if columns else []
    width = max([len(r) for r in rows] + [5])
    print(" " * width + "".join(f"  {h:>12}" for h in columns))
    for r in rows:
        print(f"{r:<{width}}" + "".join(f"  {col[r]:>12}" for col in columns.values()))
