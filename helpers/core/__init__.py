"""core — what every layer may use: the compute device and memory-sized chunks (``backend``), the one
error type for bad input (``errors``), repository paths and atomic writes (``paths``), the metric
catalogue (``catalogue``: each score's label, unit, direction, family and meaning, defined once)
and scatter-once Dask passes (``dask_tasks``). Imports nothing else from hetbook."""
