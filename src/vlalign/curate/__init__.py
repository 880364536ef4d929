"""Curation of the training pool: every filter's measurement and verdict is recorded per sample."""
