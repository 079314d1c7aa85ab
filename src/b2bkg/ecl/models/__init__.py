"""ECL waveform models, registered with the shared trainer (:mod:`b2bkg.training.registry`).

* ``ecl-gan`` (:mod:`.gan`): the seed's 1D conv GAN, ring-conditioned, with an event latent;
* ``ecl-ae`` (:mod:`.ae`): the autoencoder baseline, a ring-conditioned VAE;
* ``ecl-cov`` (:mod:`.cov`): the covariance-matrix baseline, per-ring Cholesky sampling.

All learn pedestals, noise and pile-up from their ``--data`` file alone (:mod:`.data`), train on the
non-selected waveforms and support ``b2bkg generate --keep-from`` (:mod:`.common`).
"""
