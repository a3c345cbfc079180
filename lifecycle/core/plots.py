"""Matplotlib set-up shared by every stage's PNGs: no display needed, one look."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # runs headless (CI, servers); notebooks show the saved PNGs

import matplotlib.pyplot as plt  # noqa: E402


def figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), layout="constrained")
    return fig, axes


def save(fig, path) -> None:
    fig.savefig(path, dpi=120)
    plt.close(fig)
