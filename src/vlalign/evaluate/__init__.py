"""Evaluation of aligned embeddings: retrieval recall and zero-shot classification."""

from vlalign.evaluate.metrics import retrieval_recall, zeroshot_accuracy

__all__ = ["retrieval_recall", "zeroshot_accuracy"]
