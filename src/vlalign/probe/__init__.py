"""The probing matrix: how alignable each (vision, text) encoder pair is, and what predicts it (SAIL)."""
