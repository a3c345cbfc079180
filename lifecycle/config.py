"""The whole run's configuration: one section per concern, one per stage.

`load("configs/offline.yaml", ["scope.criteria.min_rougeL=0.3"])` reads the YAML,
applies the overrides and checks every key, type and value before anything heavy
starts. `python -m lifecycle options` lists every option with its help. The stage
sections come from the stage registry (`lifecycle.stages`), one per stage, in order.
"""

from __future__ import annotations

import dataclasses

from lifecycle.core.config import build, load_yaml, option, require
from lifecycle.core.data import DataConfig
from lifecycle.core.metrics import MetricsConfig
from lifecycle.core.models import ModelsConfig
from lifecycle.core.store import RunConfig
from lifecycle.stages import STAGES

SHARED = (("run", RunConfig, "Run name, folder and seed."),
          ("data", DataConfig, "The dataset and its columns and splits."),
          ("models", ModelsConfig, "Candidate foundation models, device and dtype."),
          ("metrics", MetricsConfig, "How outputs are measured: toxicity scorer, bootstrap resamples."))


def _check(self) -> None:
    # Across sections, so here; references that need the disk or the machine are checked by core/preflight.py.
    require(self.select.pin is None or self.select.pin in self.models.candidates, "select.pin", self.select.pin,
            f"one of models.candidates {self.models.candidates}, or null to pick by the zero-shot ranking")


Config = dataclasses.make_dataclass(
    "Config", [(name, cls, option(cls, help=text)) for name, cls, text in SHARED]
    + [(stage.name, stage.config, option(stage.config, help=stage.help)) for stage in STAGES],
    namespace={"__post_init__": _check, "__module__": __name__})


def load(path: str, overrides: list[str] = ()) -> Config:
    return build(Config, load_yaml(path, list(overrides)))
