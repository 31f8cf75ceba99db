"""Shared fixtures. The challenge fixtures live beside the repository in ../shared (never copied
here); tests that need them skip cleanly when that folder is absent."""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HETBOOK_QUIET", "1")
os.environ.setdefault("HETBOOK_DEVICE", "cpu")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "challenge-format"


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
