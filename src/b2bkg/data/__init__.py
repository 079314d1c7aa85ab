"""Data files shipped with b2bkg (the Geant4 PXD reference)."""
