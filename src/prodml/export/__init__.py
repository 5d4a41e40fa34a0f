"""The model package: one ONNX graph with its schema, reference profile and digests.

``prodml.export.package`` (loading, verification) imports neither scikit-learn nor skl2onnx, so the
serving path can use it; ``prodml.export.onnx`` (conversion) is for training.
"""
