"""Whole-slide inference: streaming tiled prediction to a pyramidal TIFF, QuPath GeoJSON and overlay.

Modules, one idea each:

* :mod:`~pathseg_core.inference.plan` — output frame, work units (tiles / prompt windows), row bands.
* :mod:`~pathseg_core.inference.blend` — overlap weights and the open-rows accumulator.
* :mod:`~pathseg_core.inference.tiff_writer` — streamed lossless pyramidal TIFF.
* :mod:`~pathseg_core.inference.vectorize` — bands → merged QuPath GeoJSON polygons.
* :mod:`~pathseg_core.inference.overlay` — thumbnail with the classes blended on top.
* :mod:`~pathseg_core.inference.journal` — resume journal (cached bands, fsync'd log).
* :mod:`~pathseg_core.inference.loading` — checkpoint → model, classes, resolution.
* :mod:`~pathseg_core.inference.engine` — the per-slide pipeline.
* :mod:`~pathseg_core.inference.segment_cli` — ``pathseg segment``.
* :mod:`~pathseg_core.inference.predict` — the same through ``trainer.predict`` over many GPUs.
"""
