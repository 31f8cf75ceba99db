"""chapters — one module per chapter's computation (``preprocessing`` for chapter 2, ``volume`` for chapter 3, ``subspace`` for
chapter 4, ``distribution`` for chapter 5, ``images`` for chapter 6,
``robustness_study`` for chapter 7,
``summary`` for chapter 8, …): a notebook narrates and calls one function per computation (the loops over
submissions, metrics, window sizes and replicates, the set selection, the files written live
here), and the tests call the same functions on a tiny data set without running the notebook.
Sentences and figures stay in :mod:`helpers.report`, called from the notebook."""
