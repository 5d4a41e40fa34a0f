"""Online serving: one transport-free data plane (``dataplane``) behind REST (``http``) and gRPC.

Importing ``prodml.serve`` loads neither mlflow nor scikit-learn: the server serves a verified ONNX
package and talks to the registry in the background.
"""
