"""report — what the book shows: each chapter's result sentences computed from its tables
(``story``, ``story_scores``, ``story_images``, ``story_summary``, ``headline``), the leaderboard
(``leaderboard``), GT-free calibration (``calibration``), figures (``plots``; ``figures_volume``
for chapters 3 and 4) and kernel-free browsers (``widgets``)."""
