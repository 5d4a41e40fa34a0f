"""Export a torch module to the model package's ONNX graph, prove it agrees, describe tensor inputs.

The module's logits are wrapped into the package's outputs (``label`` int64 ``[N]`` and
``probabilities`` ``[N, classes]`` for a classifier, ``variable`` ``[N, 1]`` for a regressor), exported
with ``torch.onnx.export(dynamo=True)`` at opset 18 with a dynamic batch axis (and a dynamic step axis
for sequences), and checked against torch eager in ONNX Runtime like the tabular export.

Two input layouts:

- **columns** (:func:`compose`): a tabular preprocessing graph (skl2onnx, one ``[N, 1]`` input per
  column, output ``variable [N, F]``) is joined in front of the network, so the package has the same
  inputs as a tabular one and today's server scores it unchanged (an MLP on churn, a CNN on pixel
  columns).
- **tensors**: the network's own inputs, e.g. ``image`` float ``[N, 1, 8, 8]`` or a padded sequence
  ``x [N, T, F]`` with ``lengths [N]``; ``schema.json`` lists them as :func:`tensor_input` entries
  (``"kind": "tensor"``, dtype, shape with ``-1`` for dynamic axes).

Example:
    >>> graph = export_module(module, {"image": torch.zeros(2, 1, 8, 8)}, task="multiclass")  # doctest: +SKIP
    >>> check_torch_parity(module, graph, {"image": images}, task="multiclass")  # doctest: +SKIP
    {'max_abs_diff': 2.9e-08, 'rows': 450.0}
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from prodml.core.errors import MissingDependency
from prodml.core.types import Task
from prodml.export.onnx import TARGET_OPSET, ExportError
from prodml.export.tensors import check_tensors

__all__ = [
    "check_tensors",
    "check_torch_parity",
    "compose",
    "export_module",
    "tensor_input",
    "tensor_schema",
    "to_torchscript",
]

OPSET = TARGET_OPSET[""]
_DTYPES = {"float32": "float", "int64": "int64"}


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependency("torch", "torch") from exc
    return torch


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.export speaks through warnings and its own loggers; a successful export says nothing."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR + 10)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _scored(module: Any, task: Task) -> Any:
    """``module`` with the package's outputs instead of logits."""
    torch = _torch()

    class Scored(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = module

        def forward(self, *inputs: Any) -> Any:
            logits = self.net(*inputs)
            if task == "regression":
                return logits.reshape(-1, 1)
            probabilities = logits.softmax(-1)
            return probabilities.argmax(-1), probabilities

    return Scored().eval()


def export_module(
    module: Any,
    example: Mapping[str, Any],
    *,
    task: Task,
    dynamic: Mapping[str, Mapping[int, str]] | None = None,
) -> Any:
    """Export ``module`` (called as ``module(*example.values())``) to an ``onnx.ModelProto``.

    ``example`` maps input names to example tensors (at least 2 rows); axis 0 of every input is dynamic
    (``batch``), and ``dynamic`` names more (``{"x": {1: "steps"}}``).

    Raises:
        ExportError: torch.export or the ONNX conversion failed.
    """
    torch = _torch()
    names = list(example)
    shapes: dict[str, dict[int, Any]] = {}
    batch = torch.export.Dim("batch", min=1)
    for name in names:
        axes: dict[int, Any] = {0: batch}
        for axis, label in (dynamic or {}).get(name, {}).items():
            axes[axis] = torch.export.Dim(label, min=1, max=int(example[name].shape[axis]))
        shapes[name] = axes
    outputs = ["variable"] if task == "regression" else ["label", "probabilities"]
    wrapped = _scored(module, task)
    try:
        with _quiet():
            program = torch.onnx.export(
                wrapped,
                tuple(example.values()),
                dynamo=True,
                input_names=names,
                output_names=outputs,
                dynamic_shapes=(tuple(shapes[n] for n in names),),  # forward(*inputs): one tuple
                opset_version=OPSET,
                verbose=False,
            )
    except Exception as exc:  # torch.export raises many types; all mean "cannot export"
        raise ExportError(
            f"cannot export the torch model to ONNX: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
            hint="keep forward() free of data-dependent Python control flow (see docs/dl.md, 'Export')",
        ) from exc
    model = program.model_proto
    for value in model.graph.input:  # name the batch axis the way the tabular graphs leave it: free
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    return model


def check_torch_parity(
    module: Any, model: Any, inputs: Mapping[str, np.ndarray], *, task: Task, atol: float = 1e-4
) -> dict[str, float]:
    """Compare the ONNX graph in ONNX Runtime with torch eager on ``inputs``.

    Returns:
        ``{"max_abs_diff": …, "rows": …}`` over the probabilities (or values).

    Raises:
        ExportError: a difference above ``atol``, or a label that differs where the top two
            probabilities are further apart than ``atol``.
    """
    torch = _torch()
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, dict(inputs))
    wrapped = _scored(module, task)
    with torch.no_grad():
        native = wrapped(*(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()))
    native_scores = (native if task == "regression" else native[1]).numpy()
    onnx_scores = onnx_out[0] if task == "regression" else onnx_out[1]
    diff = np.abs(native_scores.astype(np.float64) - onnx_scores.astype(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    rows = len(next(iter(inputs.values())))
    if worst > atol or not np.isfinite(onnx_scores).all():
        raise ExportError(
            f"the ONNX graph disagrees with the torch model on {int((diff > atol).any(-1).sum())} of {rows} "
            f"rows "
            f"(max |diff| {worst:.3g} > {atol:g})",
            hint="an operator exported differently; the model was not registered",
        )
    if task != "regression":
        top2 = np.sort(native_scores, axis=-1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > atol
        if (onnx_out[0][clear] != native[0].numpy()[clear]).any():
            raise ExportError("the ONNX graph's labels disagree with the torch model's")
    return {"max_abs_diff": worst, "rows": float(rows)}


def compose(preprocess: Any, network: Any, *, feature_input: str = "x") -> Any:
    """One graph: the column-wise ``preprocess`` graph (output ``variable``) feeding ``network``'s input.

    Raises:
        ExportError: the graphs do not join (opsets, names).
    """
    import onnx
    from onnx import compose as onnx_compose

    network = onnx.ModelProto.FromString(network.SerializeToString())
    preprocess = onnx.ModelProto.FromString(preprocess.SerializeToString())
    target = {o.domain or "": o.version for o in network.opset_import}.get("", OPSET)
    if {o.domain or "": o.version for o in preprocess.opset_import}.get("", target) < target:
        # skl2onnx emits the lowest opset its operators need; lift it to the network's
        from onnx import version_converter

        preprocess = version_converter.convert_version(preprocess, target)
    ir = max(preprocess.ir_version, network.ir_version)
    preprocess.ir_version = network.ir_version = ir
    ops = {o.domain or "": o.version for o in preprocess.opset_import}
    for o in network.opset_import:
        if (o.domain or "") in ops and ops[o.domain or ""] != o.version:
            raise ExportError(f"opset of domain '{o.domain}' differs: {ops[o.domain or '']} vs {o.version}")
    for o in preprocess.opset_import:  # both graphs must import the union of domains
        if (o.domain or "") not in {p.domain or "" for p in network.opset_import}:
            network.opset_import.append(o)
    for o in network.opset_import:
        if (o.domain or "") not in {p.domain or "" for p in preprocess.opset_import}:
            preprocess.opset_import.append(o)
    prep_out = [o.name for o in preprocess.graph.output]
    if prep_out != ["variable"]:
        raise ExportError(f"the preprocessing graph outputs {prep_out}, expected ['variable']")
    network = onnx_compose.add_prefix(network, "net/", rename_inputs=True, rename_outputs=False)
    try:
        merged = onnx_compose.merge_models(preprocess, network, io_map=[("variable", f"net/{feature_input}")])
    except Exception as exc:
        raise ExportError(f"cannot join the preprocessing and network graphs: {exc}") from exc
    onnx.checker.check_model(merged)
    return merged


def tensor_input(
    name: str,
    dtype: str,
    shape: list[int],
    *,
    dynamic: tuple[int, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    max_size_of: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """A ``schema.json`` input entry for a tensor: ``-1`` marks a dynamic axis (axis 0 and ``dynamic``).

    ``minimum`` / ``maximum`` bound the values (e.g. a sequence's ``lengths`` in ``[1, steps]``);
    ``max_size_of`` = (input, axis) bounds them by another input's size on that axis in the same request
    (``lengths`` ≤ the steps of ``events``). A dynamic axis other than the batch is bounded by the size
    given here (``max_shape``: the longest sequence seen in training, the positions a Transformer has).
    """
    if dtype not in _DTYPES:
        raise ExportError(f"tensor input '{name}' has dtype {dtype}; prodml exports {', '.join(_DTYPES)}")
    dims = [-1 if axis == 0 or axis in dynamic else int(n) for axis, n in enumerate(shape)]
    entry: dict[str, Any] = {"name": name, "kind": "tensor", "dtype": _DTYPES[dtype], "shape": dims}
    if minimum is not None:
        entry["min"] = minimum
    if maximum is not None:
        entry["max"] = maximum
    if any(axis in dynamic for axis in range(1, len(shape))):
        entry["max_shape"] = [-1 if axis == 0 else int(n) for axis, n in enumerate(shape)]
    if max_size_of is not None:
        entry["max_size_of"] = [max_size_of[0], int(max_size_of[1])]
    return entry


def tensor_schema(
    inputs: list[dict[str, Any]],
    *,
    task: Task,
    classes: list[Any] | None,
    target: str,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """The whole ``schema.json`` of a tensor-input package (outputs as :func:`infer_schema` writes them)."""
    if task in ("binary", "multiclass"):
        outputs = [
            {"name": "label", "dtype": "int64", "shape": [-1]},
            {"name": "probabilities", "dtype": "float", "shape": [-1, len(classes or [])]},
        ]
    else:
        outputs = [{"name": "variable", "dtype": "float", "shape": [-1, 1]}]
    schema: dict[str, Any] = {"task": task, "target": target, "inputs": inputs, "outputs": outputs}
    if classes is not None:
        schema["classes"] = [c.item() if hasattr(c, "item") else c for c in classes]
    if task == "binary":
        schema["threshold"] = threshold
    return schema


def to_torchscript(module: Any, example: Mapping[str, Any], *, task: Task) -> bytes:
    """A traced TorchScript archive of ``module`` with the package's outputs, for users who want one.

    The package itself serves ONNX; this is an extra artifact (``torch.jit.load`` it yourself).
    """
    torch = _torch()
    buffer = io.BytesIO()
    with _quiet():
        traced = torch.jit.trace(_scored(module, task), tuple(example.values()))
        torch.jit.save(traced, buffer)
    return buffer.getvalue()
