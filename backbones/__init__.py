"""Reference backbones and presets, registered through the ``ctcm.backbones`` / ``ctcm.presets`` entry
points (installed as ``ctcm_backbones``). ``ctcm`` never imports this package directly."""
