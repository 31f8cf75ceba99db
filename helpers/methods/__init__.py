"""methods — adapters from heterogeneity methods' native outputs (cryoDRGN weights + latents, a
volume series + per-particle labels, cryoSPARC / RECOVAR folders) to a :class:`~helpers.io.mapset.MapSet`."""
