"""vlalign: SAIL-style vision-language alignment on frozen encoders, as a reproducible workflow."""

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str):
    # Lazy, so `import vlalign` does not import torch and the encoders.
    if name == "load_model":
        from vlalign.model import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
