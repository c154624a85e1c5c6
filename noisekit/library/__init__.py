"""NoiseQuery (Wang et al., "The Silent Prompt", ICCV 2025): a noise library built once, stored as seeds, and
queried by text and attributes.

Examples:
    >>> from noisekit.library import NoiseLibrary, clip_extractor
    >>> library = NoiseLibrary.build(pipe, "lib", num_seeds=10_000, extractors=[
    ...     "color", "sharpness", "texture", "shape", clip_extractor("shapes-clip")])
    >>> result = library.query(text="a red circle", attributes=["brightness=low"], top_k=4)
    >>> pipe("a red circle", latents=library.noise(result.seeds, pipe)).images
    >>> build_index("lib")  # a grown library of 100k entries or more: re-index its CLIP table
"""

from .attributes import (COLOR_COLUMNS, SHAPE_COLUMNS, SHARPNESS_COLUMNS, TEXTURE_COLUMNS, color_attributes,
                         glcm, hu_moments, shape_attributes, sharpness_attributes, srgb_to_lab, texture_attributes)
from .build import add_features, build_library, make_manifest
from .extractors import Extractor, add_extractor, clip_extractor, get_extractor, list_extractors
from .index import build_index
from .library import NoiseLibrary, library_noise
from .query import QueryResult
from .targets import COLOR_NAMES, parse_attribute

__all__ = [
    "COLOR_COLUMNS",
    "COLOR_NAMES",
    "Extractor",
    "NoiseLibrary",
    "QueryResult",
    "SHAPE_COLUMNS",
    "SHARPNESS_COLUMNS",
    "TEXTURE_COLUMNS",
    "add_extractor",
    "add_features",
    "build_index",
    "build_library",
    "clip_extractor",
    "color_attributes",
    "get_extractor",
    "glcm",
    "hu_moments",
    "library_noise",
    "list_extractors",
    "make_manifest",
    "parse_attribute",
    "shape_attributes",
    "sharpness_attributes",
    "srgb_to_lab",
    "texture_attributes",
]
