"""vlalign: SAIL-style vision-language alignment on frozen encoders, as a reproducible workflow."""

__version__ = "0.1.0"
