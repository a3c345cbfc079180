"""Matplotlib set-up shared by every stage's PNGs: no display needed, one look.

Imported only when a figure is drawn: the stage modules import this one, and `status`
or `options` should not pay the half second matplotlib takes to import."""

from __future__ import annotations

import functools


@functools.cache
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # runs headless (CI, servers); notebooks show the saved PNGs
    import matplotlib.pyplot as plt

    return plt


def figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    fig, axes = _pyplot().subplots(1, ncols, figsize=(width, height), layout="constrained")
    return fig, axes


def save(fig, path) -> None:
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
