"""The lifecycle as pipelines of steps: ``prodml.pipeline.train``."""
