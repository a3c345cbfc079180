"""Cheap checks of what a config refers to, before any stage runs.

The config classes check values that need no I/O and no heavy import when the config
loads. What needs a look at the machine or the disk — can the run folder be written, is
there a CUDA GPU for QLoRA, does the reward model's folder exist, do the LoRA target
modules exist in the candidate models — and the options passed through to the libraries
(`core/library_options.py`: PEFT, TRL, bitsandbytes and generation options, checked by
the libraries, which take seconds to import) are checked here, once, by the CLI, for the
stages about to run: a bad value then fails in seconds with the key and the fix, instead
of after minutes of upstream work and model loads. Nothing here loads weights (target
modules are read off a model built on the meta device).

    python -c "from lifecycle.config import load; from lifecycle.core import preflight; \
               preflight.check(load('configs/offline.yaml'), ['finetune'])"
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lifecycle.core import library_options, models, tracking
from lifecycle.core.errors import ConfigError, ModelError
from lifecycle.core.toxicity import SCORERS, ScorerConfig


def check(cfg, stages) -> None:
    """Raise a LifecycleError for the first reference that the given stages would trip on."""
    stages = set(stages)
    _run_root(cfg.run.root)
    tracking.check(cfg.run.report_to)  # `mlflow` named but not installed: now, not when the first trainer starts
    for ref in cfg.models.candidates:
        if ref not in models.PACKAGED:
            models.resolve(ref)  # a missing local folder or a malformed name; no download
    library_options.check(cfg, stages)  # `learning_rate: abc`, `lr_scheduler_type: cosin`, by the libraries
    rlhf = "rlhf" in stages and cfg.rlhf.enabled
    if "finetune" in stages:
        _qlora(cfg)
        _target_modules(cfg, "finetune.lora.target_modules", cfg.finetune.lora.get("target_modules"))
    if rlhf:
        _scorer(cfg.rlhf.reward, "rlhf.reward")
        _file(cfg.rlhf.reward_check, "rlhf.reward_check", "a labelled jsonl ({text, toxic: 0/1} per line), or null "
              "for the demo probe set")
        _target_modules(cfg, "rlhf.lora.target_modules", cfg.rlhf.lora.get("target_modules"))
    if rlhf or stages & {"evaluate", "quantize"}:
        _scorer(cfg.metrics.toxicity, "metrics.toxicity")


def _run_root(root: str) -> None:
    """The run folder's parent must be creatable and writable: found now, not as a traceback mid-run."""
    path = Path(root).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lifecycle-write-check-"):
            pass
    except OSError as err:
        raise ConfigError("run.root", root, f"a folder this user can create and write to ({type(err).__name__}: "
                          f"{err.strerror or err}); choose another place, e.g. run.root=runs") from None


def _qlora(cfg) -> None:
    if cfg.finetune.method != "qlora":
        return
    device = models.pick_device(cfg.models.device)
    if not device.startswith("cuda"):
        found = f"resolves to `{device}` here" if cfg.models.device == "auto" else f"is `{device}`"
        raise ConfigError("finetune.method", "qlora", f"lora or full on this machine: QLoRA's 4-bit base needs a CUDA "
                          f"GPU with bitsandbytes, and models.device {found}; use finetune.method=lora")


def _file(path: str | None, key: str, what: str) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        raise ConfigError(key, path, f"{what}; no such file{_from_cwd(path)}")


def _scorer(ref, key: str) -> None:
    """A classifier named by a local path must be a save_pretrained folder with the configured label;
    a hub id is left to the stage (it may be cached, or the hub reachable)."""
    scorer = ScorerConfig(model=ref) if isinstance(ref, str) else ref
    if scorer.model in SCORERS:
        return
    where = key if isinstance(ref, str) else f"{key}.model"
    if not scorer.nontoxic_label:
        raise ConfigError(key, ref, f"a built-in scorer ({', '.join(SCORERS)}) or {{model: <classifier>, "
                          "nontoxic_label: <its label that means not toxic>}: a classifier needs nontoxic_label")
    folder = Path(scorer.model).expanduser()
    if not _looks_local(scorer.model):
        return
    if not (folder / "config.json").is_file():
        state = "is a folder without config.json" if folder.is_dir() else "does not exist"
        raise ConfigError(where, scorer.model, f"a save_pretrained classifier folder, but `{folder}` {state}"
                          f"{_from_cwd(scorer.model)}. Train one with `python -m lifecycle.reward_model "
                          f"--data labels.jsonl --out {scorer.model}`, fix the path, or use profanity-check")
    labels = {str(v) for v in models.load_config(str(folder)).id2label.values()}  # reads config.json only
    if scorer.nontoxic_label not in labels:
        raise ConfigError(f"{key}.nontoxic_label", scorer.nontoxic_label,
                          f"one of the labels of `{scorer.model}`: {sorted(labels)}")


def _from_cwd(path: str) -> str:
    return "" if Path(path).expanduser().is_absolute() else f" (relative paths start from {Path.cwd()})"


def _looks_local(ref: str) -> bool:
    """`./x`, `/x`, `~/x`, or `models/x` where `models/` exists here: a path, not an `org/name` hub id."""
    path = Path(ref).expanduser()
    return ref.startswith((".", "/", "~")) or path.exists() or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())


def _target_modules(cfg, key: str, wanted) -> None:
    """A list of LoRA target modules must name modules of every model that may be trained (the pinned
    candidate, or each candidate), read from configs that are on disk already; others are skipped."""
    if not isinstance(wanted, list):
        return  # `all-linear`, a regex, or null: PEFT resolves those per model
    refs = [cfg.select.pin] if cfg.select.pin else cfg.models.candidates
    for ref in refs:
        names = _module_names(ref, cfg.models.cache_dir)
        if names is None:
            continue
        missing = [t for t in wanted if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, kind in names.items() if kind == "Linear"})
            raise ConfigError(key, wanted, f"module names of every candidate model, but {missing} match no module of "
                              f"`{ref}`; its linear layers are {linear}. Use some of those, or `all-linear`")


def _module_names(ref: str, cache_dir: str | None) -> dict[str, str] | None:
    """Module name -> class name of `ref`'s architecture, built on the meta device (no weights read),
    or None when its config is not on this machine (a hub id not downloaded, a packaged model not imported)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if ref in models.PACKAGED:
        folder = models.cache_root(cache_dir) / ref
        if not (folder / "lifecycle_import.json").is_file():
            return None
        ref = str(folder)
    try:
        config = AutoConfig.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError):
        return None
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    try:
        with init_empty_weights():
            model = cls.from_config(config)
    except (ValueError, ImportError, ModelError):  # an architecture this transformers cannot build: not ours to judge
        return None
    return {name: type(module).__name__ for name, module in model.named_modules() if name}
