"""The server a user would write in an afternoon: FastAPI + ONNX Runtime, no validation, no metrics.

    MODEL=path/to/model.onnx uvicorn benchmarks.apps.afternoon:app --port 9000

It takes MLflow's ``dataframe_split`` body at ``/invocations`` (the same bytes every server in
``bench_serve.py`` receives) and returns the class probabilities.
"""

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], options, providers=["CPUExecutionProvider"])
kinds = {i.name: i.type for i in session.get_inputs()}
app = FastAPI()


@app.post("/invocations")
async def invocations(payload: dict) -> dict:  # type: ignore[type-arg]
    split = payload["dataframe_split"]
    feeds = {}
    for j, name in enumerate(split["columns"]):
        column = [row[j] for row in split["data"]]
        if kinds[name] == "tensor(string)":
            feeds[name] = np.array(column, dtype=object).reshape(-1, 1)
        else:
            feeds[name] = np.array([np.nan if v is None else v for v in column], dtype=np.float32).reshape(
                -1, 1
            )
    probabilities = session.run(["probabilities"], feeds)[0]
    return {"predictions": probabilities.tolist()}
