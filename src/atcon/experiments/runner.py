"""Many small runs in one experiment folder: shared splits and data, skip-if-done, timings.

An experiment is a list of :class:`Run` specs. :class:`Store` trains each one into
``DIR/runs/<key>`` (the key hashes the full config and the parent run, so two experiments asking
for the same run share it), evaluates its best checkpoint on the test set once
(``test_eval.pt``), and records the wall time of both (``record.json``). A finished run is never
redone; a killed one resumes from its last checkpoint.

Every run of a (per-class, seed) pair reads the same split file ``DIR/splits/...json``. The
datasets of a split are built once per process, and every file is decoded once per process
(:mod:`atcon.data.decoded`: all splits share the validation and test files), so later runs pay
neither for decoding nor for dataset construction.

Several processes can share an experiment (``--shard K/N``: N processes, on one machine's cores or
on a cluster's nodes, over one folder): :meth:`Store.prefetch` gives each process every N-th run of
a list to train, then waits for the others'; a run outside any list belongs to the process its
key's hash names. A process waits for a run that belongs to another instead of training it, so
every run is trained once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atcon._json import to_json
from atcon.evaluate import EvalSpec, EvaluationResult, LocalizationProtocol
from atcon.results_io import atomic_write_text
from atcon.train.config import TrainConfig
from atcon.train.data import TaskData, build_task_data, task_split
from atcon.train.strategies import strategy_class


@dataclass(frozen=True)
class Run:
    """One training run of an experiment.

    Attributes:
        method: row label in tables (e.g. ``"Baseline + Aug"``).
        cfg: the run's config; ``weights`` is replaced by the parent's best checkpoint.
        parent: the run whose best checkpoint this one starts from (fine-tuning), or None.
        tags: what the run varies (``per_class``, ``seed``, ``model``, ...), for tables.
    """

    method: str
    cfg: TrainConfig
    parent: Run | None = None
    tags: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        """Folder name: readable prefix + hash of the config and of the parent chain.

        The method label is not part of it, so experiments that name the same training
        differently (the method's fine-tuning is also control (a)) share one run. Only fields
        that differ from their defaults are hashed, so a new config field (whose default keeps
        the old behaviour) leaves every existing key, and its finished run, valid.
        """
        changed = {
            f.name: getattr(self.cfg, f.name)
            for f in dataclasses.fields(self.cfg)
            if getattr(self.cfg, f.name) != f.default
        }
        ident = json.dumps(
            {"cfg": changed, "parent": self.parent.key if self.parent else None}, sort_keys=True
        )
        digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
        c = self.cfg
        model = re.sub(r"[^A-Za-z0-9_.]+", "-", c.model)  # timm:NAME -> timm-NAME
        return f"{c.strategy}-{model}-pc{c.per_class}-s{c.seed}-{digest}"


@dataclass
class Record:
    """What the store knows about a finished run."""

    run: Run
    dir: Path
    checkpoint: Path
    train_seconds: float
    eval_seconds: float
    trained_now: bool
    result: EvaluationResult
    best_epoch: int = 0  # epoch of the selected checkpoint (-1: fine-tuning kept its starting model)


class Store:
    """Trains, evaluates and caches the runs of an experiment folder.

    Args:
        out: experiment folder.
        device: evaluation device (training uses each config's ``device``).
        n_resamples: bootstrap resamples of every evaluation.
        progress: print one line per run and show training progress bars.
        shard: ``(K, N)``: this is process K of N sharing the folder (module docstring).
        poll: seconds between checks for another process's run.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        device: str = "auto",
        n_resamples: int = 1000,
        progress: bool = True,
        shard: tuple[int, int] = (0, 1),
        poll: float = 5.0,
    ):
        from atcon.devices import resolve_device

        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard {index}/{count}: write K/N with 0 <= K < N, e.g. 0/2 and 1/2")
        self.out = Path(out)
        self.device = resolve_device(device)
        self.n_resamples = n_resamples
        self.progress = progress
        self.shard = (index, count)
        self.poll = poll
        self._owner: dict[str, int] = {}
        # Every run of the store is evaluated under one protocol, stated under its tables.
        self.protocol = LocalizationProtocol()
        self._data: dict[str, TaskData] = {}
        self._records: dict[str, Record] = {}

    # --- splits and data -----------------------------------------------------------------

    def split_file(self, cfg: TrainConfig) -> Path:
        """The split file every run with ``cfg``'s data, per-class count and split seed shares."""
        if cfg.split is not None:
            return Path(cfg.split)
        # A manifest is named by its folder too: every build of a benchmark has a manifest.csv.
        data = Path(cfg.data)
        named = f"{data.parent.name}-{data.name}" if data.suffix in (".csv", ".json") else data.name
        name = re.sub(r"[^A-Za-z0-9]+", "-", named)
        # Settings that change the draw and are off by default name the file only when set.
        drawn = "".join(
            f"-{tag}{re.sub(r'[^A-Za-z0-9.]+', '-', str(value))}"
            for tag, value in (("v", cfg.val_size), ("g", cfg.group_by), ("ml", cfg.multi_label))
            if value is not None
        )
        path = (
            self.out / "splits" / f"{name}-d{cfg.data_seed}-pc{cfg.per_class}-s{cfg.split_seed}{drawn}.json"
        )
        if not path.is_file():
            task_split(cfg).save(path)
        return path

    def with_split(self, cfg: TrainConfig) -> TrainConfig:
        return cfg.replace(split=str(self.split_file(cfg)))

    def data(self, cfg: TrainConfig) -> TaskData:
        """Datasets for ``cfg`` (which must name its split file), built and decoded once per process."""
        # Everything build_task_data reads (the pool's holdout draw depends on the seed).
        key = json.dumps(
            [
                cfg.data, cfg.split, cfg.multi_label, cfg.data_seed, cfg.data_size, cfg.model, cfg.image_size,
                cfg.augment,
                cfg.unlabeled, cfg.select, cfg.holdout, cfg.seed if cfg.select == "label-free" else None,
                strategy_class(cfg.strategy).two_views, cfg.on_bad_file,
            ]
        )  # fmt: skip
        if key not in self._data:
            data = build_task_data(cfg)
            for ds in (data.train, data.val, data.test, data.unlabeled, data.holdout):
                ds = getattr(ds, "dataset", ds)  # a Subset of the pool
                preload = getattr(ds, "preload", None)
                if callable(preload):
                    preload()
            self._data[key] = data
        return self._data[key]

    # --- runs ----------------------------------------------------------------------------

    def resolve(self, run: Run) -> TrainConfig:
        """The config the run trains with: its split file and, when it has one, its parent's weights."""
        cfg = self.with_split(run.cfg)
        if run.parent is not None:
            cfg = cfg.replace(weights=str(self.get(run.parent).checkpoint), new_head=False)
        return cfg

    @property
    def is_main(self) -> bool:
        """Whether this process writes the experiment's results (shard 0)."""
        return self.shard[0] == 0

    def owns(self, run: Run) -> bool:
        """Whether this process trains ``run`` (always, without shards)."""
        index, count = self.shard
        owner = self._owner.get(run.key, int(hashlib.sha256(run.key.encode()).hexdigest(), 16) % count)
        return owner == index

    def wait_for(self, path: Path, what: str) -> None:
        """Wait until another process has written ``path``."""
        waited = 0.0
        while not path.is_file():
            if self.progress and waited % 600 < self.poll:
                print(f"[experiment] shard {self.shard[0]}/{self.shard[1]} waits for {what}", flush=True)
            time.sleep(self.poll)
            waited += self.poll

    def prefetch(self, runs: Sequence[Run], after: Callable[[Record], None] | None = None) -> list[Record]:
        """Train and evaluate ``runs``: this process every N-th of them, then wait for the others.

        Args:
            runs: runs in the order to train them (parents before their fine-tunings).
            after: called with the record of each run this process trained or evaluated (for
                further evaluations the owner makes).

        Returns:
            The records, in order.
        """
        unique = list({r.key: r for r in runs}.values())
        for k, r in enumerate(unique):
            self._owner.setdefault(r.key, k % self.shard[1])
        for r in unique:
            if self.owns(r):
                record = self.get(r)
                if after is not None:
                    after(record)
        return [self.get(r) for r in runs]

    def get(self, run: Run) -> Record:
        """Train (unless finished) and evaluate (unless evaluated) one run; returns its record.

        With shards, a run another process owns is waited for instead."""
        key = run.key
        if key in self._records:
            return self._records[key]
        from atcon.train.run import train

        cfg = self.resolve(run)
        run_dir = self.out / "runs" / key
        record_file = run_dir / "record.json"
        if not self.owns(run):
            self.wait_for(record_file, f"{key} ({run.method})")
        old = json.loads(record_file.read_text()) if record_file.is_file() else {}
        trained_now = not (run_dir / "summary.json").is_file()
        train_seconds = old.get("train_seconds", 0.0)
        if trained_now:
            start = time.perf_counter()
            resume = (run_dir / "checkpoints" / "last.pt").is_file()
            train(cfg, run_dir, resume=resume, overwrite=not resume, progress=False, data=self.data(cfg))
            train_seconds = time.perf_counter() - start
        eval_file = run_dir / "test_eval.pt"
        eval_seconds = old.get("eval_seconds", 0.0)
        if eval_file.is_file():
            result = EvaluationResult.load(eval_file)
        else:
            start = time.perf_counter()
            result = self._evaluate(run, cfg, run_dir)
            result.save(eval_file)
            eval_seconds = time.perf_counter() - start
        record = Record(
            run,
            run_dir,
            run_dir / "checkpoints" / "best.pt",
            train_seconds,
            eval_seconds,
            trained_now,
            result,
            int(json.loads((run_dir / "summary.json").read_text())["best_epoch"]),
        )
        atomic_write_text(
            record_file,
            to_json(
                {
                    "method": run.method,
                    "tags": run.tags,
                    "train_seconds": train_seconds,
                    "eval_seconds": eval_seconds,
                }
            ),
        )
        if self.progress:
            status = "trained" if trained_now else "reused"
            print(
                f"[experiment] {key}: {status}, train {train_seconds:.0f} s, eval {eval_seconds:.1f} s",
                flush=True,
            )
        self._records[key] = record
        return record

    def _evaluate(self, run: Run, cfg: TrainConfig, run_dir: Path) -> EvaluationResult:
        from atcon.trained_models import evaluate_checkpoint, load_model

        loaded = load_model(run_dir / "checkpoints" / "best.pt", run.method)
        spec = EvalSpec(n_resamples=self.n_resamples, device=self.device, protocol=self.protocol)
        return evaluate_checkpoint(loaded, self.data(cfg).test, spec)

    def records(self) -> list[Record]:
        return list(self._records.values())

    def timing_table(self) -> str:
        """Markdown: wall time of every run this process touched (0 s = done by an earlier process)."""
        lines = [
            "| run | method | tags | train (s) | eval (s) | this process |",
            "|---|---|---|---:|---:|:-:|",
        ]
        for r in self._records.values():
            tags = ", ".join(f"{k}={v}" for k, v in r.run.tags.items())
            lines.append(
                f"| {r.dir.name} | {r.run.method} | {tags} | {r.train_seconds:.1f} | {r.eval_seconds:.1f} | "
                f"{'trained' if r.trained_now else 'reused'} |"
            )
        return "\n".join(lines)
