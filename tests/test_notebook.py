"""training_notebook.ipynb: well-formed, and runs top to bottom in smoke mode (generated data, 1-epoch runs)."""

from __future__ import annotations

import os
import sys

import nbformat
import pandas as pd
import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "training_notebook.ipynb"
#: Cell tags whose cells must leave at least one PNG figure behind.
FIGURE_TAGS = (
    "eda-figure",
    "curves-figure",
    "shipped-curves",
    "confusion-figure",
    "weight-figure",
    "hardest-figure",
    "teacher-figure",
)
RUN_NAMES = ("A_crp", "B_mixcut")


def tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]


def test_notebook_is_valid_and_every_code_cell_parses():
    transformer = pytest.importorskip("IPython.core.inputtransformer2").TransformerManager()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            compile(transformer.transform_cell(cell.source), f"{NOTEBOOK.name}:{cell.id}", "exec")
    for tag in (*FIGURE_TAGS, "train", "per-class-table"):
        assert tagged(nb, tag), f"no cell tagged {tag!r}"
    text = "\n".join(cell.source for cell in nb.cells)
    calls = ("load_fer2013(", "TrainConfig(", "run(cfg", "fit_ensemble_main(", "Ensemble.load(", "fit_weight(")
    for call in (*calls, "make_soft_labels(", "soft_labels="):
        assert call in text, f"the notebook no longer calls {call}"


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch) -> str:
    """A `python3` kernelspec that runs this very interpreter, found first through JUPYTER_PATH.

    An installed `python3` spec may name another Python (its argv is often plain "python"); this one
    guarantees the kernel sees the same fer_core, torch and matplotlib as the test.
    """
    kernelspec = pytest.importorskip("ipykernel.kernelspec", reason="ipykernel is not installed: no kernel to run")
    jupyter_dir = tmp_path / "jupyter"
    kernelspec.write_kernel_spec(jupyter_dir / "kernels" / "python3")
    paths = [str(jupyter_dir), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(paths))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    return "python3"


def fake_shipped_history(root):
    """Histories shaped like fer_core.train's, so the shipped-curves cell plots instead of skipping."""
    for offset, name in enumerate(RUN_NAMES):
        epochs = pd.Series(range(1, 4))
        history = pd.DataFrame(
            {
                "epoch": epochs,
                "lr": 2e-3 / epochs,
                "train_loss": 1.9 - 0.2 * epochs,
                "train_acc": 0.3 + 0.1 * epochs,
                "train_macro_f1": 0.2 + 0.1 * epochs,
                "val_loss": 1.8 - 0.1 * epochs,
                "val_acc": 0.35 + 0.08 * epochs + 0.01 * offset,
                "val_macro_f1": 0.25 + 0.08 * epochs,
                "epoch_seconds": 60.0,
            }
        )
        (root / name).mkdir(parents=True)
        history.to_csv(root / name / "history.csv", index=False)
    return root


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_notebook_runs_in_smoke_mode(tmp_path, monkeypatch, python3_kernel):
    nbclient = pytest.importorskip("nbclient")
    runs = tmp_path / "runs"
    weights_before = sorted(p.name for p in (REPO / "weights").glob("*")) if (REPO / "weights").is_dir() else []
    # The kernel inherits os.environ when it starts; monkeypatch restores everything afterwards.
    monkeypatch.setenv("FER_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("FER_RUN_DIR", str(runs))
    monkeypatch.setenv("FER_SHIPPED_HISTORY", str(fake_shipped_history(tmp_path / "shipped")))
    monkeypatch.delenv("FER_DATA", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name=python3_kernel, resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on the first failing cell

    errors = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"
    ]
    assert not errors
    for tag in FIGURE_TAGS:
        images = [
            out
            for cell in tagged(nb, tag)
            for out in cell.outputs
            if out.output_type == "display_data" and "image/png" in out.get("data", {})
        ]
        assert images, f"cells tagged {tag!r} produced no figure"
    (train_cell,) = tagged(nb, "train")
    train_text = "".join(out.get("text", "") for out in train_cell.outputs if out.output_type == "stream")
    assert all(name in train_text for name in RUN_NAMES), train_text
    (table_cell,) = tagged(nb, "per-class-table")
    assert any("text/html" in out.get("data", {}) for out in table_cell.outputs)
    for name in RUN_NAMES:
        assert len(pd.read_csv(runs / name / "history.csv")) == 1
    (student,) = runs.glob("A_crp_distilled_*")  # named after its parent's sha256, so a new parent starts afresh
    assert len(pd.read_csv(student / "history.csv")) == 1  # the distillation stage ran
    assert (runs / "weights" / "ensemble.json").is_file()
    after = sorted(p.name for p in (REPO / "weights").glob("*")) if (REPO / "weights").is_dir() else []
    assert after == weights_before, "the smoke run must not touch the shipped weights/"
