"""What the notebooks share, so that each holds only its own walk-through: the set-up (third-party
notes filtered on import, work from the repository root and load the config as the CLI does),
running the stages up to one, and a stage's artifacts shown inline.

    from lifecycle import notebook
    nb = notebook.setup(CONFIG, OVERRIDES)
    nb.run_until("finetune")   # what `python -m lifecycle all --until finetune` does
    nb.show("finetune")
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from lifecycle.core import quiet

# Before the libraries load, as the CLI does, so their import-time notes are filtered too; and
# without ipywidgets tqdm's bars here are text, which is fine, though tqdm.auto warns at import.
quiet.setup()
warnings.filterwarnings("ignore", message="IProgress not found")

from lifecycle import pipeline, report  # noqa: E402
from lifecycle import stages as registry  # noqa: E402
from lifecycle.config import load  # noqa: E402
from lifecycle.core import preflight  # noqa: E402
from lifecycle.pipeline import Invocation  # noqa: E402
from lifecycle.core.render import IMAGE, cell, demote, value_text, when  # noqa: E402
from lifecycle.core.store import Run  # noqa: E402


@dataclass
class Notebook:
    how: Invocation  # the config (relative to the repository root) and overrides, as a command line gives them
    cfg: object  # the loaded lifecycle.config.Config
    run: Run

    def load(self, *overrides: str):
        """The config with more `section.key=value` overrides after the notebook's own."""
        return load(self.how.config, [*self.how.overrides, *overrides])

    def run_until(self, stage: str) -> None:
        """Every stage up to and including `stage`, in order; up-to-date ones are skipped. The same
        checks as the CLI's first (references, library options), before any stage runs."""
        names = registry.NAMES[: registry.NAMES.index(stage) + 1]
        preflight.check(self.cfg, names)
        for name in names:
            pipeline.execute(self.cfg, name, self.how)

    def show(self, stage: str) -> None:
        """Display a stage's state, headline metrics, markdown and plots inline (IPython.display)."""
        from IPython.display import Image, Markdown, display

        folder = self.run.dir(stage)
        manifest = self.run.manifest(stage)
        if not manifest or manifest.get("status") != "completed":
            display(Markdown(f"*`{stage}` has not completed in {folder.parent}, so there is nothing to show yet.*"))
            return
        state = pipeline.status(self.cfg, stage)
        metrics = [f"| {k} | {cell(value_text(v))} |" for k, v in (manifest.get("metrics") or {}).items()]
        head = (f"`{folder}`: **{state.state}**" + (f" ({state.reason})" if state.reason else "")
                + ", finished " + when(manifest.get("finished_at")))
        display(Markdown(head + (". Headline metrics:\n\n| metric | value |\n|---|---|\n" + "\n".join(metrics)
                                 if metrics else ".")))
        shown = set()
        for doc in sorted(folder.glob("*.md")):
            text = demote(doc.read_text(), 1)
            last = 0
            for match in IMAGE.finditer(text):  # the stage's own layout: text, plot, text, ...
                display(Markdown(text[last:match.start()]))
                if (folder / match.group(2)).is_file():
                    display(Image(filename=str(folder / match.group(2))))
                    shown.add(match.group(2))
                last = match.end()
            display(Markdown(text[last:]))
        for png in sorted(folder.glob("*.png")):
            if png.name not in shown:
                display(Image(filename=str(png)))

    def lineage(self) -> None:
        """Display the run's lineage table (the run report's)."""
        from IPython.display import Markdown, display

        display(Markdown(report.lineage(self.cfg)))


def setup(config: str, overrides: list[str]) -> Notebook:
    """Work from the repository root (a notebook starts in `notebooks/`), so `runs/` here is the
    CLI's `runs/`, and load the config as the CLI does."""
    config_path = Path(config).resolve()
    os.chdir(Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd())
    how = Invocation(os.path.relpath(config_path), tuple(overrides))
    cfg = load(how.config, list(how.overrides))  # what `python -m lifecycle ... --config CONFIG OVERRIDES` loads
    run = Run(cfg.run)
    print(f"config {how.config}, run folder {run.root}")
    return Notebook(how, cfg, run)
