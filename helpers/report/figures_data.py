"""Figures of chapters 1 and 2: particle images, and submissions before and after preprocessing."""
from __future__ import annotations

import matplotlib.pyplot as plt


def particle_rows(rows: list, n_images: int, box: int, pixel_size: float, k: int = 6):
    """One row of ``k`` images per (name, stack) in ``rows`` (e.g. noise-free and noisy), grey
    scale, no ticks; the title gives the stack's size (``n_images`` of ``box``² px at
    ``pixel_size`` Å)."""
    k = min(k, *(len(x) for _, x in rows))
    fig, axes = plt.subplots(len(rows), k, figsize=(1.6 * k, 1.7 * len(rows) + 0.2), squeeze=False)
    for i, (name, stack) in enumerate(rows):
        for j in range(k):
            axes[i, j].imshow(stack[j], cmap="gray")
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(name)
    fig.suptitle(f"{n_images} particle images, {box}² px at {pixel_size} Å")
    return fig


def before_after(labels: list, raw: dict, sets: dict):
    """For each label: the first map's central z-section as submitted (top; its box and voxel
    size in the title) and on the GT grid and frame (bottom)."""
    n = max(1, len(labels))
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6), squeeze=False)
    for j, lab in enumerate(labels):
        axes[0, j].imshow(raw[lab].section, cmap="gray", origin="lower")
        axes[0, j].set_title(f"{lab}: raw {raw[lab].box}³ @ {raw[lab].voxel_size:.3f} Å", fontsize=10)
        axes[1, j].imshow(sets[lab].section, cmap="gray", origin="lower")
        axes[1, j].set_title("on the GT grid and frame", fontsize=10)
        for a in axes[:, j]:
            a.set_xticks([]), a.set_yticks([])
    fig.tight_layout()
    return fig
