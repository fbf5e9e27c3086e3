"""Tree depth: model quality against the cost of reasons, side by side on the same folds.

Reasons are exact TreeSHAP (LightGBM's ``pred_contrib``), whose cost per account grows with the
depth of the trees; serving with reasons spends most of its CPU there. This script measures what
a depth limit costs in quality and saves in TreeSHAP, to justify ``churn train``'s default.

For every ``--seeds`` value it generates the default synthetic data, builds the training rows
once, and for each ``--depths`` value (``-1`` = unlimited) fits the rolling-origin backtest folds
and the held-out fold with otherwise the ``churn train`` defaults (early stopping, calibration).
It prints the mean ROC AUC, PR AUC and top-decile lift over those folds, the trees kept, and the
in-process CPU time of TreeSHAP per account (one thread, up to 2,000 held-out rows).

    .venv/bin/python benchmarks/tree_depth.py --seeds 7 11 3 5 --depths -1 5   # ~8 min, 2 cores
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.synthetic import generate  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.dataset import build_training_set, resolve_label  # noqa: E402
from training.run import fit_fold  # noqa: E402
from training.splits import backtest_folds, holdout_fold  # noqa: E402

METRICS = ("roc_auc", "pr_auc", "top_decile_lift")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 3, 5])
    parser.add_argument("--depths", type=int, nargs="+", default=[-1, 5],
                        help="max_depth values to compare (-1 = no limit)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    rows: dict[int, list[list[float]]] = {d: [] for d in args.depths}
    for seed in args.seeds:
        tables = generate(seed=seed)
        config = resolve_label(TrainConfig(), tables)
        ts = build_training_set(tables, config)
        as_of, split = ts.frame["as_of"], config.split
        folds = backtest_folds(as_of, split.backtest_folds, config.label.horizon_days,
                               split.validation_dates)
        folds.append(holdout_fold(as_of, split.test_dates, config.label.horizon_days,
                                  split.validation_dates))
        for depth in args.depths:
            c = config.model_copy(deep=True)
            c.lightgbm = c.lightgbm.model_copy(update={"max_depth": depth})
            outcomes = [fit_fold(ts, fold, c, baselines=False) for fold in folds]
            quality = [float(np.nanmean([o.metrics["model"][m] for o in outcomes]))
                       for m in METRICS]
            final = outcomes[-1]
            X = final.model.encoder_.transform(ts.X[final.fold.test][:2000])  # noqa: N806
            t = time.process_time()
            final.model.booster_.predict(X, pred_contrib=True, num_threads=1,
                                         num_iteration=final.model.best_iteration_)
            shap_ms = (time.process_time() - t) / len(X) * 1000
            rows[depth].append([*quality, final.model.best_iteration_, shap_ms])
            print(f"seed {seed:3d}  max_depth {depth:3d}: ROC AUC {quality[0]:.4f}  PR AUC "
                  f"{quality[1]:.4f}  lift {quality[2]:.2f}  trees {final.model.best_iteration_:4d}"
                  f"  TreeSHAP {shap_ms:.3f} ms/account", flush=True)
    print(f"\nmean over seeds {args.seeds} (folds: backtest + held-out):")
    base = np.array(rows[args.depths[0]]).mean(axis=0)
    for depth in args.depths:
        m = np.array(rows[depth]).mean(axis=0)
        print(f"  max_depth {depth:3d}: ROC AUC {m[0]:.4f} ({m[0] - base[0]:+.4f})  PR AUC "
              f"{m[1]:.4f} ({m[1] - base[1]:+.4f})  lift {m[2]:.2f}  trees {m[3]:.0f}  TreeSHAP "
              f"{m[4]:.3f} ms/account ({m[4] / base[4]:.2f}x)")


if __name__ == "__main__":
    main()
