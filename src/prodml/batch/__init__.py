"""Batch inference: score whole tables with the server's validation and runtime, written atomically.

The life of one job (:func:`score`, also ``prodml batch score``):

1. ``model``   resolve ``NAME@alias`` / ``NAME/VERSION`` in the registry (or take a package directory)
               and load the digest-verified package, as the server does;
2. ``inputs``  list the files (local, glob, ``s3://``; Parquet, ORC, CSV) and check their columns against
               ``schema.json`` before reading a row;
3. ``commit``  open a hidden temporary directory beside the output, repairing what a killed job left;
4. an engine   streams record batches through ``scorer`` — the server's Validator and Runtime, with
               per-row rejects found by bisection — and writes ``outputs`` (part files, partitioned on
               request) and ``_rejects/``: ``local`` on threads over one process's cores, ``spark`` in
               ``mapInArrow`` with one ONNX Runtime session per Python worker;
5. ``rejects`` fails the job above the reject rate, writing nothing;
6. ``profile`` profiles the input and the predictions (``_profile.json``) for the monitor;
7. ``commit``  writes ``_SUCCESS`` (counts, input fingerprint, model version, timings) and renames the
               directory into place.

``demo`` scores the latest row of each entity in a project's feature frame (``prodml demo``'s batch step).
"""

from __future__ import annotations

from prodml.batch.job import BatchResult, score

__all__ = ["BatchResult", "score"]
