"""The figures of notebooks 03 and 04, drawn from their tables (`tcm_kit.tables`) -> matplotlib Figures."""
from __future__ import annotations

import numpy as np
import pandas as pd


def plot_few_shot(table: pd.DataFrame, metric: str = "hmean", title: str | None = None):
    """hmean vs shot (log x), one line per detector, error bars = std over seeds -> matplotlib Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for det, g in table.groupby("detector", sort=False):
        g = g.sort_values("shot")
        ax.errorbar(g["shot"], g[f"{metric}_mean"], yerr=g[f"{metric}_std"].fillna(0.0), marker="o", capsize=3,
                    label=f"{det}")
    ax.set_xscale("log")
    shots = sorted(table["shot"].unique())
    ax.set_xticks(shots, [f"{s:g}" for s in shots])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("shot (fraction of the training split)")
    ax.set_ylabel(f"{metric} (test)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or f"Few-shot: {metric} vs shot (mean ± std over seeds)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # room for report.save_figure's stamp
    return fig


def plot_transfer_heatmap(long: pd.DataFrame, metric: str = "hmean", title: str | None = None):
    """One heat-map per detector (rows: trained on, columns: tested on), plus TCM minus baseline when both
    dbnet and tcm-dbnet are present -> matplotlib Figure."""
    import matplotlib.pyplot as plt

    dets = list(dict.fromkeys(long["detector"]))
    doms = list(dict.fromkeys(long["train_domain"]))
    tests = list(dict.fromkeys(long["test_domain"]))
    mats = {d: long[long["detector"] == d].pivot(index="train_domain", columns="test_domain", values=metric)
            .reindex(index=doms, columns=tests).to_numpy() for d in dets}
    panels = [(d, mats[d], "viridis", (0, 1)) for d in dets]
    pairs = [(d, d[4:]) for d in dets if d.startswith("tcm-") and d[4:] in mats]
    for tcm, base in pairs:
        diff = mats[tcm] - mats[base]
        lim = max(0.05, float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 0.05)
        panels.append((f"{tcm} - {base}", diff, "RdBu", (-lim, lim)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.5, 3.4), squeeze=False)
    for ax, (name, m, cmap, (lo, hi)) in zip(axes[0], panels):
        im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="w" if cmap == "viridis" and m[i, j] < 0.6 else "k")
        ax.set_xticks(range(len(tests)), tests, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(doms)), doms, fontsize=8)
        ax.set_xlabel("tested on")
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    axes[0][0].set_ylabel("trained on")
    fig.suptitle(title or f"Cross-domain transfer: test {metric}")
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # room for report.save_figure's stamp
    return fig


def plot_claims(df: pd.DataFrame, title: str | None = None):
    """Each comparison's difference with its 95 % interval over seeds (thick) and from the hierarchical bootstrap
    over seeds and test images (thin), coloured by its Holm-corrected verdict; the zero line is "no effect"."""
    import matplotlib.pyplot as plt

    colour = {"supported": "tab:green", "contradicted": "tab:red"}
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(df) + 1.2))
    y = np.arange(len(df))[::-1]
    for yi, (_, r) in zip(y, df.iterrows()):
        c = colour.get(r["verdict"], "tab:gray")
        ax.plot([r["hboot_ci_lo"], r["hboot_ci_hi"]], [yi, yi], color=c, lw=1)
        if np.isfinite(r["seed_ci_lo"]):
            ax.plot([r["seed_ci_lo"], r["seed_ci_hi"]], [yi, yi], color=c, lw=4, alpha=0.6)
        ax.plot(r["difference"], yi, "o", color=c)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"({r['claim']}) {r['comparison']}" for _, r in df.iterrows()], fontsize=8)
    ax.set_xlabel("hmean difference (95 % intervals: thick over seeds, thin over seeds and test images)")
    ax.set_title(title or "The paper's claims, paired by seed")
    fig.tight_layout()
    return fig


def plot_learning_curves(curves: pd.DataFrame, title: str | None = None):
    """Validation hmean against training step, one line per detector: the mean over seeds, the seeds' range
    shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for det, g in curves.groupby("detector", sort=False):
        s = g.groupby("step")["hmean"].agg(["mean", "min", "max"])
        line, = ax.plot(s.index, s["mean"], marker="o", ms=3, label=det)
        ax.fill_between(s.index, s["min"], s["max"], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation hmean (best box threshold)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(title or "Validation learning curves (mean over seeds, range shaded)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
