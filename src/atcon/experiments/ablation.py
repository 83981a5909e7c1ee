"""The paper's Table 4: which consistency loss tracks the supervised validation loss?

Supervised training for E epochs; after every epoch the validation supervised loss and the 4 x 3
variants of the consistency loss (resolution x similarity) are measured on the validation set.
The table holds, for each variant, the Pearson correlation (in %) between its per-epoch curve and
the supervised loss curve: high means the unsupervised loss estimates the supervised one.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from atcon._json import to_json
from atcon.consistency import RESOLUTIONS, SIMILARITIES, ConsistencyConfig, attention_consistency
from atcon.data import collate
from atcon.evaluate.metrics import labels_of
from atcon.results_io import write_csv, write_json, write_markdown
from atcon.train import distributed
from atcon.train.config import TrainConfig
from atcon.train.data import build_task_data
from atcon.train.engine import classification_loss, eval_mode, unpack_output

VARIANTS: list[tuple[str, str]] = list(itertools.product(RESOLUTIONS, SIMILARITIES))


def validation_losses(
    model: nn.Module,
    loader: DataLoader[Any],
    device: torch.device,
    task: str,
    target_layer: str | None = None,
) -> dict[str, float]:
    """Mean supervised loss and mean loss of every consistency variant over a loader (eval mode).

    Returns:
        ``{"supervised": ..., "<resolution>/<similarity>": ...}``.
    """
    sums = {"supervised": 0.0, **{f"{r}/{s}": 0.0 for r, s in VARIANTS}}
    n = 0
    with eval_mode(model):
        for x, target in loader:
            x = x.to(device)
            labels = labels_of(target, task).to(device)  # type: ignore[arg-type]
            with torch.no_grad():
                logits, _ = unpack_output(model(x))
                sums["supervised"] += float(classification_loss(logits, labels, task)) * len(x)
            for r, s in VARIANTS:
                cfg = ConsistencyConfig(resolution=r, similarity=s, detach_mask=True)  # type: ignore[arg-type]
                loss = attention_consistency(model, x, cfg, target_layer=target_layer).loss
                sums[f"{r}/{s}"] += float(loss.detach().sum())
            n += len(x)
    return {k: v / max(n, 1) for k, v in sums.items()}


def pearson_r(a: list[float], b: list[float]) -> float:
    """Pearson correlation of two curves (nan when either is constant or shorter than 3)."""
    if len(a) < 3:
        return math.nan
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    ta, tb = ta - ta.mean(), tb - tb.mean()
    den = float(ta.norm() * tb.norm())
    return float((ta * tb).sum()) / den if den > 0 else math.nan


def variant_table(cell: Callable[[str], str]) -> str:
    """Markdown table of the 4 x 3 variants (rows: resolution, columns: similarity); ``cell("r/s")`` fills it."""
    head = "| resolution | " + " | ".join(SIMILARITIES) + " |"
    lines = [head, "|---" + "|---:" * len(SIMILARITIES) + "|"]
    for r in RESOLUTIONS:
        lines.append(f"| {r} | " + " | ".join(cell(f"{r}/{s}") for s in SIMILARITIES) + " |")
    return "\n".join(lines)


def correlation_table(curves: dict[str, list[float]]) -> str:
    """Markdown table (rows: resolution, columns: similarity) of r x 100 with the supervised curve."""

    def cell(key: str) -> str:
        value = pearson_r(curves[key], curves["supervised"])
        return "n/a" if math.isnan(value) else f"{100 * value:.1f}"

    return variant_table(cell)


def run_ablation(cfg: TrainConfig, out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Train ``cfg`` (supervised) and record the validation curves after every epoch.

    Writes ``ablation.json`` (curves, table, seconds), ``ablation.md`` and ``curves.png`` into
    ``out``; a finished ``ablation.json`` is returned as is (the experiment resumes by skipping).
    """
    from atcon.train.run import Trainer

    out = Path(out)
    done = out / "ablation.json"
    if done.is_file():
        result: dict[str, Any] = json.loads(done.read_text())
        # Undefined losses are written as null.
        result["curves"] = {
            k: [math.nan if v is None else v for v in vs] for k, vs in result["curves"].items()
        }
        return result
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cfg = cfg.replace(strategy="supervised")
    info = distributed.setup(cfg.device)
    torch.manual_seed(cfg.seed)
    data = build_task_data(cfg)
    trainer = Trainer(cfg, out, info, data)
    trainer.log.release()
    loader = DataLoader(data.val, batch_size=cfg.eval_batch_size, collate_fn=collate, num_workers=cfg.workers)
    curves: dict[str, list[float]] = {}
    for epoch in range(cfg.epochs):
        trainer.state.batch = 0
        trainer.train_one_epoch(epoch, None)
        for k, v in validation_losses(trainer.net, loader, info.device, data.task, cfg.target_layer).items():
            curves.setdefault(k, []).append(v)
        if progress:
            print(f"[ablation] epoch {epoch}: supervised val loss {curves['supervised'][-1]:.4f}", flush=True)
    table = correlation_table(curves)
    result = {
        "config": cfg.to_dict(),
        "curves": curves,
        "table": table,
        "seconds": time.perf_counter() - start,
    }
    from atcon.viz import ablation_curves_figure, save_figure

    save_figure(ablation_curves_figure(curves, RESOLUTIONS, SIMILARITIES), out / "curves.png", dpi=100)
    write_markdown(out / "ablation.md", table + "\n")
    write_json(done, result)
    return result


def run_ablation_seeds(
    cfg: TrainConfig, out: str | Path, seeds: list[int], *, progress: bool = False
) -> dict[str, Any]:
    """:func:`run_ablation` for every seed (``seed`` and ``split_seed``) into ``out/seed<s>``.

    Returns the per-seed results and a table of the mean (and, for several seeds, the standard
    deviation) of each variant's correlation, also written to ``out/ablation.md``/``.json``.
    """
    out = Path(out)
    start = time.perf_counter()
    runs = [
        run_ablation(cfg.replace(seed=s, split_seed=s), out / f"seed{s}", progress=progress) for s in seeds
    ]
    rs = {
        key: [pearson_r(r["curves"][key], r["curves"]["supervised"]) for r in runs]
        for key in (f"{a}/{b}" for a, b in VARIANTS)
    }

    def mean_sd(key: str) -> str:
        v = torch.tensor(rs[key], dtype=torch.float64) * 100
        text = f"{float(v.nanmean()):.1f}" if not v.isnan().all() else "n/a"
        if len(v) > 1 and not v.isnan().any():
            text += f" ± {float(v.std()):.1f}"
        return text

    table = variant_table(mean_sd)
    result: dict[str, Any] = {
        "seeds": seeds,
        "correlations": rs,
        "table": table,
        "per_seed_tables": [r["table"] for r in runs],
        "seconds": time.perf_counter() - start,
        "seconds_per_seed": [r["seconds"] for r in runs],
    }
    title = f"Pearson r (%) between each consistency loss and the supervised validation loss, seeds {seeds}"
    write_markdown(out / "ablation.md", f"{title}: mean ± sd\n\n{table}\n")
    write_json(out / "ablation.json", result)
    rows = ["resolution,similarity,seed,pearson_r"]
    rows += [f"{k.replace('/', ',')},{s},{r!r}" for k, values in rs.items() for s, r in zip(seeds, values)]
    write_csv(out / "ablation.csv", "\n".join(rows) + "\n")
    from atcon import report

    report.write_report(
        out / "ablation.html",
        "Ablation (Table 4)",
        [
            report.table(table, title + " (mean ± sd over seeds)"),
            *(
                report.figure(out / f"seed{s}" / "curves.png", f"Validation curves, seed {s}")
                for s in seeds
                if (out / f"seed{s}" / "curves.png").is_file()
            ),
            report.text(to_json(runs[0]["config"]), "Settings (first seed)", preformatted=True),
            report.text(
                ", ".join(f"seed {s}: {t:.0f} s" for s, t in zip(seeds, result["seconds_per_seed"])),
                "Wall time",
            ),
        ],
    )
    return result
