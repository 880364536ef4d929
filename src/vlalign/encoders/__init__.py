"""Frozen image and text towers behind one factory: `create_encoder(spec, **options)`."""

from .registry import SPEC_FORMS, ImageEncoder, TextEncoder, create_encoder, is_text_spec

__all__ = ["SPEC_FORMS", "ImageEncoder", "TextEncoder", "create_encoder", "is_text_spec"]
