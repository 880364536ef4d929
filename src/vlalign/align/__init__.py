"""SAIL-style alignment layers on frozen embeddings: heads, losses, optimiser, trainer, checkpoints,
and the train and negatives stages."""
