"""Monitoring: drift, data quality and performance of a served model, reports, checks and alert rules.

The life of one ``prodml monitor report`` (or ``check``):

- ``sources``: the rows — the server's request log (with feedback labels joined by request id), a
  project source, or any Parquet/CSV path — as one frame with ``__prediction__`` and ``ts``;
- ``windows``: that frame split by time (``7d``) or by row count;
- ``drift``: each window binned and scored against the package's ``profile.json`` with
  :mod:`prodml.export.drift` (PSI, KS, Wasserstein, Jensen–Shannon, chi-square; nulls, out-of-range
  values, unseen categories) — the same kernels the server's live sketch uses for its gauges;
- ``performance``: the task's metrics per window and model version on labelled rows, with bootstrap
  intervals;
- ``summary``: all of it for one run, and the verdict on the newest window (``DriftBreach``, exit 12);
- ``report``: the HTML page (inline SVG plots) and the JSON summary;
- ``alerts``: Prometheus alert rules and a Grafana dashboard for the ``prodml_drift_*`` gauges.

Retraining on a breach lives above, in :mod:`prodml.pipeline.retrain`.
"""
