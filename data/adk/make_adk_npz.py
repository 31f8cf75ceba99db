"""Regenerate ``adk_paths.npz`` from the PyPI package ``MDAnalysisTests`` (LGPL).

The demo ground truth of hetbook is built from three real closed-to-open transition
paths of adenylate kinase (AdK, 214 residues) that ship with ``MDAnalysisTests``:

* ``dims``  : DIMS path, ``adk.psf`` + ``adk_dims.dcd`` (98 frames)
* ``dims2`` : second DIMS path, ``adk.psf`` + ``adk_dims2.dcd`` (102 frames)
* ``tmd``   : NAMD targeted MD, ``adk_closed_NAMD.psf`` + ``adk_gbis_tmd-fast1_NAMD.dcd`` (100 frames)

Only heavy atoms (names not starting with ``H``; 1656 atoms) are kept. Coordinates are
stored *as in the DCD files* (Å, no superposition; hetbook superposes them itself), quantised
to 0.001 Å in int32 and zlib-compressed (``np.savez_compressed``).

Usage (needs ``pip install mdanalysis==2.11.0 mdanalysistests==2.11.0``)::

    python data/adk/make_adk_npz.py data/adk/adk_paths.npz
"""
import sys

import numpy as np


def main(out_path: str) -> None:
    import MDAnalysis as mda
    from MDAnalysisTests import datafiles as d

    sources = {
        "dims": (d.PSF, d.DCD),
        "dims2": (d.PSF, d.DCD2),
        "tmd": (d.PSF_NAMD_GBIS, d.DCD_NAMD_GBIS),
    }
    arrays = {}
    ref_keys = None
    for name, (psf, dcd) in sources.items():
        u = mda.Universe(psf, dcd)
        heavy = u.select_atoms("not name H*")
        keys = list(zip(heavy.resids.tolist(), heavy.names.tolist()))
        if ref_keys is None:
            ref_keys = keys
            arrays["resid"] = heavy.resids.astype(np.int16)
            arrays["atom_name"] = np.array(heavy.names, dtype="U4")
            arrays["element"] = np.array([n[0] for n in heavy.names], dtype="U1")
            order = np.arange(len(keys))
        else:
            index = {k: i for i, k in enumerate(keys)}
            order = np.array([index[k] for k in ref_keys])  # same atom order in every path
        xyz = np.stack([heavy.positions[order].copy() for _ in u.trajectory])
        arrays[f"{name}_milliangstrom"] = np.round(xyz * 1000).astype(np.int32)
    np.savez_compressed(out_path, **arrays)
    print(f"wrote {out_path}: " + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "adk_paths.npz")
