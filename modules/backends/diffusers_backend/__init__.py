"""The diffusers backend: diffusers pipelines and schedulers drive the sampling."""

from modules.backends.diffusers_backend.backend import DiffusersBackend

__all__ = ["DiffusersBackend"]
