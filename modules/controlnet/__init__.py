"""ControlNet (the sd-webui-controlnet extension's interface): model files, preprocessors, units and the UNet
wrapper that adds control residuals, shared by both backends."""
