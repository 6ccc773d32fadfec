"""Reference backbones, registered through the ``ctcm.backbones`` entry
points (installed as ``ctcm_backbones``). ``ctcm`` never imports this package directly."""
