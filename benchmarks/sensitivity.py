"""Counterfactual label-free selection: replay the logged lf_* signals of every guarded,
label-free fine-tuning run (Guided Backprop mask) under other floors; regret in validation points."""
import csv, math, sys, tomllib
from pathlib import Path
from statistics import mean

def replay(rows, min_agr, min_ent):
    start = rows[0]
    best_i, best_s = 0, -float(start["lf_consistency"])
    for i, r in enumerate(rows[1:], 1):
        ok = float(r["lf_agreement"]) >= min_agr and float(r["lf_class_entropy"]) >= min_ent * float(start["lf_class_entropy"])
        s = -float(r["lf_consistency"]) if ok else -math.inf
        if s > best_s:
            best_i, best_s = i, s
    return best_i

groups = {}
for exp in sys.argv[1:]:
    for run in sorted(Path(exp, "runs").glob("finetune-*")):
        cfg = tomllib.loads((run / "config.toml").read_text())
        if cfg.get("select") != "label-free" or cfg.get("anchor_weight") != 1.0:
            continue
        if cfg.get("mask_source", "guided_backprop") != "guided_backprop" or cfg.get("detach_mask"):
            continue
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        key = "val_map" if cfg.get("multi_label", True) and "val_map" in rows[0] and "clip" not in exp else "val_f1_macro"
        rows = [r for r in rows if r.get(key)]
        label = f"{Path(exp).name}: {cfg['model']} {cfg['image_size']}px pc{cfg['per_class']} unl={cfg.get('unlabeled')}"
        groups.setdefault(label, []).append((rows, key))
grid = [(a, e) for a in (0.8, 0.85, 0.9, 0.95, 1.0) for e in (0.9, 0.95, 0.98)]
print("| runs | " + " | ".join(f"agr>={a}, ent>={e}" for a, e in grid) + " |")
allreg = {g: [] for g in grid}
for label, runs in groups.items():
    cells = []
    for g in grid:
        reg = []
        for rows, key in runs:
            vals = [float(r[key]) for r in rows]
            reg.append(100 * (max(vals) - vals[replay(rows, *g)]))
        allreg[g].extend(reg)
        cells.append(f"{mean(reg):.2f}")
    print(f"| {label} (n={len(runs)}) | " + " | ".join(cells) + " |")
print("| all | " + " | ".join(f"{mean(allreg[g]):.2f}" for g in grid) + " |")
