"""The whole run's configuration: one section per concern, one per stage.

`load("configs/offline.yaml", ["scope.criteria.min_rougeL=0.3"])` reads the YAML,
applies the overrides and checks every key, type and value before anything heavy
starts. `python -m lifecycle options` lists every option with its help.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.core.config import build, load_yaml, option, require
from lifecycle.core.data import DataConfig
from lifecycle.core.metrics import MetricsConfig
from lifecycle.core.models import ModelsConfig
from lifecycle.core.store import RunConfig
from lifecycle.evaluate import EvaluateConfig
from lifecycle.finetune import FinetuneConfig
from lifecycle.prompt import PromptConfig
from lifecycle.rlhf import RlhfConfig
from lifecycle.quantize import QuantizeConfig
from lifecycle.scope import ScopeConfig
from lifecycle.select import SelectConfig


@dataclass
class Config:
    run: RunConfig = option(RunConfig, help="Run name, folder and seed.")
    data: DataConfig = option(DataConfig, help="The dataset and its columns and splits.")
    models: ModelsConfig = option(ModelsConfig, help="Candidate foundation models, device and dtype.")
    scope: ScopeConfig = option(ScopeConfig, help="Task, success criteria and budgets.")
    metrics: MetricsConfig = option(MetricsConfig, help="How outputs are measured: toxicity scorer, bootstrap resamples.")
    select: SelectConfig = option(SelectConfig, help="Zero-shot comparison of the candidate models.")
    prompt: PromptConfig = option(PromptConfig, help="Prompt-engineering sweep: templates, few-shot, generation.")
    finetune: FinetuneConfig = option(FinetuneConfig, help="Instruction fine-tuning: LoRA/QLoRA/full, PEFT and TRL options.")
    rlhf: RlhfConfig = option(RlhfConfig, help="RL detoxification: algorithm, reward terms and weights, TRL options.")
    evaluate: EvaluateConfig = option(EvaluateConfig, help="Side-by-side evaluation on the test split.")
    quantize: QuantizeConfig = option(QuantizeConfig, help="Deployment variants (int8, NF4) measured against the reference.")

    def __post_init__(self):
        # Across sections, so here; references that need the disk or the machine are checked by core/preflight.py.
        require(self.select.pin is None or self.select.pin in self.models.candidates, "select.pin", self.select.pin,
                f"one of models.candidates {self.models.candidates}, or null to pick by the zero-shot ranking")


def load(path: str, overrides: list[str] = ()) -> Config:
    return build(Config, load_yaml(path, list(overrides)))
