"""Frozen image and text towers behind one factory: `create_encoder(spec, **options)`."""

from .registry import (
    SPEC_FORMS,
    ImageEncoder,
    TextEncoder,
    check_encoder_entry,
    create_encoder,
    encoder_options,
    is_text_spec,
)

__all__ = ["SPEC_FORMS", "ImageEncoder", "TextEncoder", "check_encoder_entry", "create_encoder", "encoder_options",
           "is_text_spec"]
