"""The ``original`` backend's algorithmic core: AUTOMATIC1111 v1.10.1's noise, schedules, model call and samplers.

Pure torch / numpy / scipy / torchsde; nothing here knows diffusers or Easel's processing. A backend adapts
its UNet to ``unet(x, t, ModelConditioning) -> output`` and calls :func:`pipeline.sample_txt2img` or
:func:`pipeline.sample_img2img` with an :class:`rng.ImageRNG`. Facts: ``../shared/A1111-SAMPLING.md``.
"""
