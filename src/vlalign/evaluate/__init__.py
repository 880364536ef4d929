"""Evaluation of a trained aligner: retrieval, zero-shot classification and compositionality, and the
evaluate stage."""
