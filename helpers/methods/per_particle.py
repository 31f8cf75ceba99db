"""A method's per-particle output → what per-image scores need: :class:`PerParticle`.

Per-image scores (CryoBench's per-image FSC, neighbourhood similarity, information imbalance)
compare, for every image i of a data set, the method's view of image i with the GT conformation
of image i. A method gives that view in one of two forms:

* a latent coordinate per particle, ``z`` (n, d), and a generator that makes the map of any z —
  cryoDRGN: the training folder's ``z.N.pkl`` and ``weights.N.pkl`` + ``config.yaml``, run
  through ``cryodrgn eval_vol`` (:class:`CryoDRGNModel` gives the command) — :func:`from_cryodrgn`;
* a state per particle, ``state`` (n,) 0-based, indexing a volume series (one map per state) —
  cryoSPARC 3D classification / 3DVA clusters, RECOVAR k-means, cryoDRGN analyze — :func:`from_labels`.

Particle i is the i-th image of the stack the method was run on; the counts are checked against
the data set's (:class:`~helpers.io.cryobench.CryoBenchSet` or a number) when given.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from helpers.core.errors import InputError
from helpers.io.cryobench import read_volume_series
from helpers.io.labels import load_pickled_array, populations_from_labels, read_labels
from helpers.io.mapset import MapSet
from helpers.methods.adapters import _epoch_files


@dataclasses.dataclass(frozen=True)
class CryoDRGNModel:
    """The recipe for the map of a latent: a cryoDRGN training folder's files. ``epoch`` None:
    the final ``weights.pkl``/``z.pkl`` written after training."""

    workdir: Path
    epoch: int | None
    weights: Path
    z_file: Path
    config: Path

    def eval_vol_command(self, zfile, outdir, apix: float, exe: str = "cryodrgn") -> list[str]:
        """``cryodrgn eval_vol`` arguments making one map per row of ``zfile`` (a text file, one
        latent per line, d columns) in ``outdir``, at ``apix`` Å per voxel (the training images')."""
        return [str(exe), "eval_vol", str(self.weights), "-c", str(self.config), "--zfile", str(zfile),
                "-o", str(outdir), "--Apix", f"{float(apix):g}"]


@dataclasses.dataclass
class PerParticle:
    """Per-particle output of one method.

    z: (n, d) float64 latent coordinates or None. state: (n,) int64 0-based index into
    ``volumes`` or None. volumes: the volume series (populations = fraction of particles per
    state) or None. generator: a :class:`CryoDRGNModel` (the map of a z) or None. provenance:
    the files read. At least one of ``z``, ``state`` is given; both have one row per particle.
    """

    label: str
    z: np.ndarray | None = None
    state: np.ndarray | None = None
    volumes: MapSet | None = None
    generator: CryoDRGNModel | None = None
    provenance: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        where = self.provenance.get("source", self.label)
        if self.z is None and self.state is None:
            raise InputError(where, "neither latent coordinates nor states per particle.", "Give z, or state and volumes.")
        if self.state is not None:
            self.state = np.asarray(self.state, dtype=np.int64)
            if self.volumes is None:
                raise InputError(where, "states per particle without the volume series they index.",
                                 "Give the volumes (one map per state).")
            if self.state.min() < 0 or self.state.max() >= self.volumes.n_maps:
                raise InputError(where, f"states run from {self.state.min()} to {self.state.max()} but there are "
                                        f"{self.volumes.n_maps} volumes.", "Give one volume per state.")
        if self.z is not None and self.state is not None and len(self.z) != len(self.state):
            raise InputError(where, f"{len(self.z)} latent rows but {len(self.state)} states.",
                             "Give both for the same particles.")

    @property
    def n_particles(self) -> int:
        return int(len(self.z) if self.z is not None else len(self.state))

    def check_images(self, images, what: str | None = None) -> None:
        """Refuse a particle count other than the data set's: ``images`` a
        :class:`~helpers.io.cryobench.CryoBenchSet` or an image count."""
        n, ref = getattr(images, "n_images", images), getattr(images, "labels_file", "the data set")
        if n is not None and int(n) != self.n_particles:
            raise InputError(what or self.provenance.get("per_particle_file", self.label),
                             f"holds {self.n_particles} particles but {ref} holds {int(n)} images.",
                             "Give the output of the method run on this data set's whole image stack, in its order.")


def _final_files(workdir: Path):
    """(None, weights.pkl, z.pkl, config.yaml): the files cryoDRGN writes after its last epoch."""
    files = [workdir / n for n in ("weights.pkl", "z.pkl", "config.yaml")]
    for f in files:
        if not f.is_file():
            raise InputError(f, "not found.", "Let the training finish, or pass epoch= one it saved (weights.N.pkl).")
    return (None, *files)


def from_cryodrgn(workdir, epoch: int | None = None, images=None, label: str = "cryoDRGN") -> PerParticle:
    """Per-particle latents of a cryoDRGN training folder (``config.yaml``, ``weights.N.pkl``,
    ``z.N.pkl``). ``epoch`` None: the last N saved, or the final ``z.pkl``/``weights.pkl`` when no
    numbered epoch is there; -1: the final files (CryoBench's default). z = the first array
    pickled in the z file (z_mu; cryoDRGN writes z_logvar after it), (n, zdim). ``images``: the
    data set (or its image count) whose count z must match."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise InputError(workdir, "folder not found.", "Point at the folder `cryodrgn train_vae -o` wrote.")
    numbered = [p for p in workdir.glob("z.*.pkl") if p.stem.split(".")[1].isdigit()]
    if epoch == -1 or (epoch is None and not numbered and (workdir / "z.pkl").is_file()):
        ep, w, zf, cfg = _final_files(workdir)
    else:
        ep, w, zf, cfg = _epoch_files(workdir, epoch)
    z = np.asarray(load_pickled_array(zf), dtype=np.float64)
    z = z.reshape(len(z), 1) if z.ndim == 1 else z
    if z.ndim != 2 or len(z) == 0 or not np.isfinite(z).all():
        raise InputError(zf, f"holds an array of shape {z.shape}, not finite latents (n_particles, zdim).",
                         "Give the z.N.pkl cryoDRGN wrote.")
    model = CryoDRGNModel(workdir, ep, w, zf, cfg)
    prov = {"source": str(workdir), "method": "cryoDRGN", "epoch": ep, "per_particle_file": str(zf),
            "weights": str(w), "config": str(cfg)}
    out = PerParticle(label, z=z, generator=model, provenance=prov)
    out.check_images(images, zf)
    return out


def from_labels(volume_folder, labels_file, images=None, voxel_size: float | None = None,
                label: str | None = None, label_base: int | None = None) -> PerParticle:
    """A state per particle (``labels_file``: .pkl/.npy/.txt/.csv, :func:`~helpers.io.labels.read_labels`)
    and the volume series it indexes (``volume_folder``: one MRC per state, natural order, read
    lazily). ``label_base``: 0 or 1 (None: detected, :func:`~helpers.io.labels.populations_from_labels`).
    ``images``: the data set (or its image count) whose count the labels must match."""
    volume_folder, labels_file = Path(volume_folder), Path(labels_file)
    lab = read_labels(labels_file)
    stack, vs, files = read_volume_series(volume_folder, voxel_size)
    lo, hi, n = int(lab.min()), int(lab.max()), len(stack)
    if lo < 0 or hi > n or (lo == 0 and hi == n):  # no base makes these states of n maps
        raise InputError(labels_file, f"labels run from {lo} to {hi} but there are {n} maps.",
                         "Give one map per state (labels 0…n−1 or 1…n), or the label file of this map series.")
    pops = populations_from_labels(lab, len(stack), labels_file, base=label_base)
    base = label_base if label_base is not None else (0 if lab.min() == 0 else 1)  # as detected above
    prov = {"source": str(volume_folder), "files": [f.name for f in files], "steps": [], "labels": str(labels_file),
            "n_particles": int(lab.size), "label_base": base}
    vols = MapSet(stack, pops, vs, label or volume_folder.name, prov)
    out = PerParticle(label or volume_folder.name, state=lab - base, volumes=vols,
                      provenance={**prov, "per_particle_file": str(labels_file)})
    out.check_images(images, labels_file)
    return out
