"""Shared fixtures. The challenge fixtures live beside the repository in ../shared (never copied
here); tests that need them skip cleanly when that folder is absent."""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HETBOOK_QUIET", "1")
os.environ.setdefault("HETBOOK_DEVICE", "cpu")

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):  # two test workers on two cores: one torch thread each
    import torch

    torch.set_num_threads(1)
FIXTURES = REPO.parent / "shared" / "fixtures" / "challenge-format"


def pytest_collection_modifyitems(config, items):
    """``make test`` runs two xdist workers (``--dist load``, tests handed out in this order):
    the first test that reads the tiny book run (the ``executed`` fixture, ~2.5 min) goes first,
    so one worker makes the run while the other works through the independent tests; the other
    tests that read it go last, when the run is there for both workers to share."""
    uses = [it for it in items if "executed" in getattr(it, "fixturenames", ())]
    if uses:
        rest = [it for it in items if it not in uses]
        items[:] = uses[:1] + rest + uses[1:]


@pytest.fixture(scope="session")
def fixtures():
    if not FIXTURES.is_dir():
        pytest.skip(f"challenge fixtures not found at {FIXTURES} (they live only beside the repo)")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny demo data set (box 24, 24 GT maps, 6 maps per mock, 24 particles, 8 held out, 1500 for
    the reconstructed mocks) in a temp folder."""
    from helpers.datagen.simulate import make_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    make_dataset(out, REPO / "data/adk/adk_paths.npz", box=24, voxel_size=5.7, n_gt=24, n_maps=6,
                 n_small=3, n_images=24, n_recon_images=1500, n_heldout=8, seed=0)
    return out


def blob_volume(n, centers, sigma=2.0):
    """Sum of isotropic Gaussians at (x, y, z) offsets from voxel n//2 (float64)."""
    c = np.arange(n) - n // 2
    Z, Y, X = np.meshgrid(c, c, c, indexing="ij")
    v = np.zeros((n, n, n))
    for (x, y, z), w in centers:
        v += w * np.exp(-((X - x) ** 2 + (Y - y) ** 2 + (Z - z) ** 2) / (2 * sigma ** 2))
    return v


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Every chapter run once through the runner on the tiny parameters (``params/tiny.yml``), with
    one adapter-made submission added: the run folder (data/, results/, executed/, p.yml), read
    only by the tests. Made once per test session: under pytest-xdist the workers share it through
    a file lock in the session's common temporary folder (the first to ask makes it, the other
    waits and reuses it)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # .../pytest-N, common to this session's workers (not to other sessions)
    tmp, done = base / "tiny_run", base / "tiny_run.done"
    with FileLock(str(base / "tiny_run.lock")):
        if not done.exists():
            _tiny_run(tmp)
            done.touch()
    return tmp


def _tiny_run(tmp: Path) -> None:
    import yaml

    from helpers.core.paths import REPO_ROOT
    from helpers.methods import adapters
    from helpers.pipeline import run

    tmp.mkdir(parents=True)
    cfg = yaml.safe_load((REPO_ROOT / "params/tiny.yml").read_text())
    cfg["dataset"]["out_dir"] = str(tmp / "data")
    cfg["common"] = {"data_dir": str(tmp / "data"), "results_dir": str(tmp / "results")}
    cfg["executed_dir"] = str(tmp / "executed")
    (tmp / "p.yml").write_text(yaml.safe_dump(cfg))
    run.ensure_data(cfg)
    # a method output through an adapter (a volume series + per-particle labels, the way a
    # cryoSPARC/RECOVAR export comes): its provenance must reach chapter 8's "real method" text
    subs = tmp / "data" / "submissions"
    labels = np.random.default_rng(5).integers(0, 8, 500)
    np.save(tmp / "labels.npy", labels)
    ms = adapters.volume_series(subs / "lowpass", labels=tmp / "labels.npy", label="Series entry", method="volume series")
    adapters.write_submission(ms, subs, name="series_entry", align=False)
    assert run.main(["--params", str(tmp / "p.yml")]) == 0


# the one real cryoDRGN training the tests share (parse, downsample 24 -> 16 px, 2 epochs of an
# 8-D model, k-means maps through `analyze`): ~50 s of cryoDRGN commands made once per session
DRGN_OPTS = {"epochs": 2, "box": 16, "how": "kmeans", "n_maps": 3, "width": 16, "layers": 1, "threads": 1}


@pytest.fixture(scope="session")
def cryodrgn_entry(tiny_data, tmp_path_factory):
    """A copy of the tiny data set with the data step's cryoDRGN entry added
    (:func:`helpers.pipeline.demo_data.ensure_cryodrgn` with :data:`DRGN_OPTS`): (the data folder,
    the submission config as it was before). Skips where cryoDRGN is not installed. Shared by the
    test workers through a file lock, like :func:`executed`."""
    import shutil

    from filelock import FileLock

    from helpers.core.errors import InputError
    from helpers.methods import adapters
    from helpers.pipeline import demo_data

    try:
        adapters.find_cryodrgn()
    except InputError:
        pytest.skip("cryoDRGN is not installed (make cryodrgn installs it)")
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    data, done = base / "cryodrgn_entry" / "data", base / "cryodrgn_entry.done"
    with FileLock(str(base / "cryodrgn_entry.lock")):
        if not done.exists():
            shutil.rmtree(data.parent, ignore_errors=True)
            shutil.copytree(tiny_data, data)
            (data.parent / "config_before.json").write_text((data / "submissions/submission_config.json").read_text())
            demo_data.ensure_cryodrgn(data, dict(DRGN_OPTS))
            done.touch()
    return data, (data.parent / "config_before.json").read_text()
