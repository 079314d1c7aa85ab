"""ECL waveform models, registered with the shared trainer (:mod:`b2bkg.training.registry`).

* ``ecl-gan`` (:mod:`.gan`, :mod:`.wavegen`): the seed's GAN recipe with a structured generator
  (fitted pedestals and noise factors, per-ring coloured noise, event-level coherent noise and
  pile-up rates, pile-up photons convolved with a learned pulse kernel), conv discriminator;
* ``ecl-ae`` (:mod:`.ae`, :mod:`.convnet`): the autoencoder baseline, a ring-conditioned VAE;
* ``ecl-cov`` (:mod:`.cov`): the covariance-matrix baseline, per-ring Cholesky sampling.

All learn pedestals, noise and pile-up from their ``--data`` file alone (:mod:`.data`), train on the
non-selected waveforms and support ``b2bkg generate --keep-from`` (:mod:`.common`).
"""
