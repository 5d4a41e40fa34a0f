"""Features: definitions compiled to SQL, point-in-time training frames, row transforms.

``offline.py`` computes the training frame (label rows as of their time; unlabelled rows dropped with
``target.drop_missing``), ``build.py`` writes it with its lineage; ``transforms.py`` holds the row
transforms fitted with the model, ``dates.py`` the date parts computed from an ISO string (their ONNX twin
lives in ``prodml.export.onnx``).

Online: ``materialize.py`` writes each entity's latest values, computed by the same SQL as of a time T,
to the online store (``prodml.data.online_store``: SQLite or Redis), which the server reads for requests
that carry only the entity key (``prodml.serve.online``); ``skew.py`` recomputes served vectors on the
offline path and reports differences; ``feast.py`` exports the definitions as a Feast repository.
"""

from prodml.features.build import build_features
from prodml.features.offline import TrainingFrame, aggregate_sql, build_training_frame

__all__ = ["TrainingFrame", "aggregate_sql", "build_features", "build_training_frame"]
