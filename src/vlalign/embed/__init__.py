"""The embed stage: frozen-encoder features of every dataset, precomputed once, in parts when scattered."""
