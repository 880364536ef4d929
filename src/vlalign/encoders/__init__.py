"""Frozen image and text towers: the contract (`base`), the kinds and their factory (`registry`), and one
module per implementation."""

from .base import ImageEncoder, TextEncoder
from .registry import SPEC_FORMS, check_encoder_entry, create_encoder, encoder_options, is_text_spec

__all__ = ["SPEC_FORMS", "ImageEncoder", "TextEncoder", "check_encoder_entry", "create_encoder", "encoder_options",
           "is_text_spec"]
