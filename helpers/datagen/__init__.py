"""datagen — data that hetbook makes itself: the adenylate-kinase (AdK) demo data set.

``simulate`` (:func:`~helpers.datagen.simulate.make_dataset`: GT, mock submissions and particles
in the challenge's layout), built from ``ensemble`` (AdK paths -> GT conformations along MD-PC1,
populations, density maps, mask), ``mocks`` (noise-free controls, "Reconstructed" and its
degradations), ``particles`` (CTF-modulated particle images, RELION 3.1 STAR tables) and
``reconstruct`` (Wiener-filtered direct Fourier reconstruction from images with known poses)."""
