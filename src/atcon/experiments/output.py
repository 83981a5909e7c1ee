"""An experiment's output: ``DIR/results/<name>.{md,csv,json,html}`` (and ``<name>.png``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atcon._json import to_json
from atcon.experiments.methods import ExperimentConfig
from atcon.experiments.runner import Store
from atcon.results_io import write_csv, write_figure, write_json, write_markdown
from atcon.train.config import TrainConfig


@dataclass
class Outcome:
    """An experiment's tables and where they were written."""

    name: str
    markdown: str
    rows: list[dict[str, Any]]
    seconds: float
    files: list[Path]


def write_outcome(
    store: Store,
    name: str,
    title: str,
    sections: list[tuple[str, str]],
    flat: list[dict[str, Any]],
    meta: dict[str, Any],
    seconds: float,
    figure: Any = None,
) -> Outcome:
    """Write ``results/<name>.{md,json,csv,html}`` (and ``.png`` with a figure) into the store's folder."""
    from atcon import report

    folder = store.out / "results"
    folder.mkdir(parents=True, exist_ok=True)
    timing = store.timing_table()
    note = (
        "Cells: mean over seeds [95% bootstrap interval over test items, same resamples for every seed]; "
        "selected epoch: the validation-selected epoch of each seed (-1: fine-tuning kept its starting model); "
        "`*`: paired bootstrap p < 0.05 against the row's reference "
        f"({', '.join(f'{a} vs {b}' for a, b in meta.get('references', {}).items())}). "
        f"Localization (IoU, pointing game) is measured at {store.protocol.size_text}."
    )
    md = f"# {title}\n\n{note}\n\n" + "\n\n".join(f"## {t}\n\n{body}" for t, body in sections)
    md += f"\n\n## Runs (wall time)\n\n{timing}\n\nTotal: {seconds:.0f} s\n"
    files = [folder / f"{name}.md", folder / f"{name}.json", folder / f"{name}.csv", folder / f"{name}.html"]
    write_markdown(files[0], md)
    write_json(files[1], {"meta": meta, "rows": flat, "seconds": seconds}, default=str)
    write_csv(files[2], [{**r, "seeds": " ".join(f"{v:.4f}" for v in r["seeds"])} for r in flat])
    parts = [report.text(note)] + [report.table(body, t) for t, body in sections]
    if figure is not None:
        png = folder / f"{name}.png"
        write_figure(png, figure, dpi=100, bbox_inches="tight")
        files.append(png)
        parts.append(report.figure(figure, "Figure"))
    parts += [
        report.table(timing, "Runs (wall time)"),
        report.text(to_json(meta, default=str), "Settings", preformatted=True),
    ]
    report.write_report(files[3], title, parts)
    return Outcome(name, md, flat, seconds, files)


def run_meta(base: TrainConfig, exp: ExperimentConfig, refs: dict[str, str]) -> dict[str, Any]:
    """The settings written with the tables."""
    return {"train_config": base.to_dict(), "experiment": asdict(exp), "references": refs}
