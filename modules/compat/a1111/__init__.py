"""A1111's modules as extensions import them (``modules.scripts`` -> ``modules.compat.a1111.scripts`` ...)."""
