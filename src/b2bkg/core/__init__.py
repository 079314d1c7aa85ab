"""Shared core: errors, configs, seeding, progress, beam conditions."""
