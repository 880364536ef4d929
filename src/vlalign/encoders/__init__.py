"""Frozen image and text towers: the contract (`base`), the kinds and their factory (`registry`), and one
module per implementation."""

from .base import ImageEncoder, TextEncoder
from .hub import EncoderUnavailable
from .registry import (SPEC_FORMS, check_encoder_entry, create_encoder, encoder_options, hub_location, hub_problems,
                       is_text_spec, uses_hub)

__all__ = ["SPEC_FORMS", "EncoderUnavailable", "ImageEncoder", "TextEncoder", "check_encoder_entry", "create_encoder",
           "encoder_options", "hub_location", "hub_problems", "is_text_spec", "uses_hub"]
