"""Reference objectives, registered through the ``ctcm.objectives`` entry points (installed as
``ctcm_objectives``). ``ctcm`` never imports this package directly."""
