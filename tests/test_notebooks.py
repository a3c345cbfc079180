"""Every notebook runs top to bottom with nbclient on configs/tiny.yaml, the tiny random
causal model and a temporary run root, written into its `parameters` cell. They run in
order on one run root (each also runs the stages before its own, as `all --until` does,
so any one of them runs alone too), on one pytest-xdist worker (`make test` distributes by
`xdist_group`), in one kernel: each notebook starts from an empty namespace (`%reset -f`),
while the libraries are imported once. A cell that raises fails the test."""

import nbformat
import pytest
from nbclient import NotebookClient

from lifecycle import stages as registry

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook-runs")


@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(ROOT / "notebooks"))
    yield km
    km.shutdown_kernel(now=True)


def test_the_notebooks_cover_the_lifecycle():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["00_overview", "01_scope", "02_select", "03_prompt", "04_finetune", "05_rlhf",
                     "06_evaluate", "07_quantize"]


@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, run_root, kernel, tiny_causal, tmp_path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and nb.cells.index(params[0]) <= 1, "the first code cell sets the parameters"
    overrides = [f"run.root={run_root}", f"models.candidates=[{tiny_causal}]"]
    params[0].source = f"CONFIG = {str(ROOT / 'configs' / 'tiny.yaml')!r}\nOVERRIDES = {overrides!r}"
    nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))  # nothing left from the notebook before
    client = NotebookClient(nb, timeout=600, km=kernel)
    try:
        client.execute()
    finally:
        client.kc.stop_channels()
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, to read when it failed
    stage = path.stem.split("_", 1)[1]
    if stage in registry.NAMES:  # the stage ran and its plots are shown inline
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} shows no plot"
