"""Online serving: one transport-free data plane behind REST and gRPC, and the API other transports use.

The life of one REST request, module by module:

1. ``server``: stock uvicorn accepts the connection (size, time and connection caps) and calls the ASGI app.
2. ``http``: ``HttpApp`` finds the route in its one table, checks the API key, reads the body (capped).
3. ``handlers``: the endpoint turns its wire format into columns with ``protocols`` (OIP tensors of
   every transport go through one ``oip_columns``) and calls the data plane inside ``DataPlane.serve``,
   which counts and times the request for ``metrics``.
4. ``dataplane``: ``DataPlane.infer`` takes the served model from ``model`` (``ModelManager``), checks the
   columns with ``validation`` (two matrices out; a package with tensor inputs is fed by name instead,
   see ``tensors``), looks in ``cache``, and hands the feeds to ``runtime``.
5. ``runtime``: ``MicroBatcher`` runs them now on the loop or batched on the runtime thread; ``Runtime``
   calls ONNX Runtime. ``reqlog`` (or ``kafka``) records inputs and outputs by request id.
6. Back in ``handlers`` the outputs become the protocol's response; ``http`` maps any prodml error to its
   status, once. ``grpc`` is the same path with protobuf at both ends.

For a transport without HTTP (batch, Kafka)::

    from prodml.serve import DataPlane, ModelManager, Runtime, Validator

``load_package`` (``prodml.export.package``) loads a verified package; ``Validator(package.schema).feeds``
checks columns; ``Runtime(package).run`` scores them; ``DataPlane.infer`` does all of it for the served
model. Importing ``prodml.serve`` loads neither mlflow nor scikit-learn, and names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DataPlane", "InvalidInput", "LoadedModel", "ModelManager", "Prediction", "Runtime", "Validator"]

_HOME = {
    "DataPlane": "prodml.serve.dataplane",
    "Prediction": "prodml.serve.dataplane",
    "LoadedModel": "prodml.serve.model",
    "ModelManager": "prodml.serve.model",
    "Runtime": "prodml.serve.runtime",
    "Validator": "prodml.serve.validation",
    "InvalidInput": "prodml.core.errors",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'prodml.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
