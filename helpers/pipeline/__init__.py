"""pipeline — running the book: the papermill runner (``run``: make-like reruns, ``--status``), which
chapters are stale and why (``fingerprint``), the demo data for a run (``demo_data``), Dask passes
(``distributed``), the robustness study (``robustness``), the data-budget-matched control
(``matched``) and one module per chapter's computation (``chapters``) so a notebook is one call."""
