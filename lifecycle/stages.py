"""The stages of the lifecycle, in order: the one list that the config, the pipeline, the CLI,
`status`, the report and the notebooks' tests read (the Makefile hands any stage name to the CLI).

Each entry says what the pipeline needs to know about a stage: its config section (named after
the stage), the upstream stages whose artifacts it consumes (`optional`: consumed when they ran,
like the models evaluate compares), the config sections its result depends on, whether it resumes
from checkpoints after a kill and trains on every process under `accelerate launch`, and its
hooks — `run(cfg, run)`, the recipe; `references(cfg)`, files and models it reads beyond the data
and model sections; `not_applicable(cfg, run)`, why it cannot apply to this run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lifecycle import evaluate, finetune, prompt, quantize, rlhf, scope, select


@dataclass(frozen=True)
class Stage:
    name: str
    config: type
    run: Callable
    help: str
    upstream: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    resumable: bool = False  # checkpoints in the working folder: a killed run continues from the last complete one
    distributed: bool = False  # under `accelerate launch` every process runs it (the trainers); else the main one
    references: Callable | None = None
    not_applicable: Callable | None = None


STAGES = (
    Stage("scope", scope.ScopeConfig, scope.run, "Task, success criteria and budgets.",
          sections=("data", "models", "scope")),
    Stage("select", select.SelectConfig, select.run, "Zero-shot comparison of the candidate models.",
          upstream=("scope",), sections=("data", "models", "scope", "select")),
    Stage("prompt", prompt.PromptConfig, prompt.run, "Prompt-engineering sweep: templates, few-shot, generation.",
          upstream=("scope", "select"), sections=("data", "models", "scope", "prompt")),
    Stage("finetune", finetune.FinetuneConfig, finetune.run,
          "Instruction fine-tuning: LoRA/QLoRA/full, PEFT and TRL options.",
          upstream=("scope", "select", "prompt"), sections=("data", "models", "scope", "finetune"),
          resumable=True, distributed=True),
    Stage("rlhf", rlhf.RlhfConfig, rlhf.run, "RL detoxification: algorithm, reward terms and weights, TRL options.",
          upstream=("scope", "finetune"), sections=("data", "models", "scope", "metrics", "rlhf"),
          resumable=True, distributed=True, references=rlhf.references, not_applicable=rlhf.not_applicable),
    Stage("evaluate", evaluate.EvaluateConfig, evaluate.run, "Side-by-side evaluation on the test split.",
          upstream=("scope", "select", "prompt"), optional=("finetune", "rlhf"),
          sections=("data", "models", "scope", "metrics", "evaluate"), references=evaluate.references),
    Stage("quantize", quantize.QuantizeConfig, quantize.run,
          "Deployment variants (int8, NF4, GGUF) measured against the reference.",
          upstream=("scope", "finetune"), optional=("rlhf",), sections=("data", "models", "scope", "metrics", "quantize")),
)
NAMES = tuple(stage.name for stage in STAGES)
_BY_NAME = {stage.name: stage for stage in STAGES}


def get(name: str) -> Stage:
    return _BY_NAME[name]


def optional_only(name: str) -> bool:
    """True for a stage that others consume only when it ran (rlhf): its failure is no dead end."""
    others = [s for s in STAGES if s.name != name]
    return any(name in s.optional for s in others) and not any(name in s.upstream for s in others)
