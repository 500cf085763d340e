"""Datasets, datamodules and whole-slide reading. Datasets know nothing of models."""
