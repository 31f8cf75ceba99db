"""io — reading and writing the challenge's real formats, and the one data model.

Every reader raises :class:`~helpers.core.errors.InputError` naming the file and the fix; none
modifies its input (``challenge-metrics.md`` §1). Modules: ``mrc`` (maps and map folders),
``submission`` (populations, raw folders, configs, preprocessed ``.pt``), ``gt`` (GT maps,
``metadata.csv``, mask), ``particles`` (STAR + ``.mrcs``), ``mapset`` (:class:`MapSet`: maps,
populations, voxel size, label — used everywhere), ``schema`` (config schemas and notices),
``labels`` (per-particle labels), ``safe_pickle`` (unpickling that runs no code), ``manifest``
(the run manifest, staged outputs, failures).

The readers are re-exported here (``from helpers import io; io.read_gt(...)``); hetbook's own
modules import them from their module.
"""
from helpers.io.gt import GT_METADATA_COLUMNS, LAZY_FOLDER_BYTES, MASK_OTHER_SCALE, MapFolder, check_finite_stack, check_gt_box, find_gt, read_gt, read_gt_maps, read_gt_metadata, read_mask  # noqa: F401
from helpers.io.mrc import MAP_SUFFIXES, list_map_files, natural_key, read_map_folder, read_map_stack, read_mrc, write_mrc  # noqa: F401
from helpers.io.particles import ParticleStack, read_particles  # noqa: F401
from helpers.io.submission import locate, SubmissionEntry, check_populations, mapset_path, read_config, read_populations, read_preprocessed_pt, read_submission_folder  # noqa: F401
from helpers.io.mapset import MapSet  # noqa: F401
