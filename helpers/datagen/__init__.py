"""datagen — data that hetbook makes itself: the adenylate-kinase demo data set (``simulate``: GT
ensemble, mock submissions, particles) and Wiener direct-Fourier reconstruction from images
(``reconstruct``)."""
