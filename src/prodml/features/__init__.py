"""Features: definitions compiled to SQL, point-in-time training frames, row transforms."""

from prodml.features.build import build_features
from prodml.features.offline import TrainingFrame, aggregate_sql, build_training_frame

__all__ = ["TrainingFrame", "aggregate_sql", "build_features", "build_training_frame"]
