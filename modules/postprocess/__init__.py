"""Postprocessing: image upscalers (built-in and spandrel models), tiled inference, latent upscale modes,
face detection and face restoration (GFPGAN, CodeFormer). Import the submodules directly; nothing runs here."""
