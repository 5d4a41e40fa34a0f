"""Convert a fitted pipeline (preprocessing + estimator) into one ONNX graph, and prove it agrees.

The graph has one input per feature column, ``[None, 1]`` each: float for numbers, string for
categories, so a client sends columns by name and the server needs no preprocessing code. Classifiers
output ``label`` and ``probabilities`` (a plain tensor, no ZipMap); regressors output ``variable``.

prodml's own transformers get ONNX converters here, LightGBM/XGBoost use onnxmltools' converters and
CatBoost its own exporter, each registered with skl2onnx, so whole pipelines convert in one call.

Date parts are computed in the graph from the ISO string (``RegexFullMatch``, ``StringSplit``,
``StringConcat`` and ``Cast``, opset 20, used only when the model has a date input), so a client sends
the date itself. Graph inputs keep the columns' names as they come (``/``, spaces, dots, unicode):
skl2onnx sanitises them, and they are renamed back after conversion.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

from prodml.core.errors import MissingDependency, ProdmlError

__all__ = ["ExportError", "check_parity", "onnx_inputs", "to_onnx"]

TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
DATE_OPSET = 20  # StringSplit, StringConcat and RegexFullMatch


class ExportError(ProdmlError):
    """The model cannot be converted to ONNX, or the ONNX graph disagrees with the native model."""

    exit_code = 8


def _one_to_one_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    n, c = operator.inputs[0].type.shape
    operator.outputs[0].type = FloatTensorType([n, c])


def _convert_signed_log1p(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_ops import OnnxAbs, OnnxAdd, OnnxLog, OnnxMul, OnnxSign

    opv = container.target_opset
    x = operator.inputs[0]
    log = OnnxLog(
        OnnxAdd(OnnxAbs(x, op_version=opv), np.array([1], np.float32), op_version=opv), op_version=opv
    )
    OnnxMul(OnnxSign(x, op_version=opv), log, op_version=opv, output_names=operator.outputs[:1]).add_to(
        scope, container
    )


def _convert_bucketize(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_ops import (
        OnnxCast,
        OnnxGreaterOrEqual,
        OnnxIsNaN,
        OnnxReduceSum,
        OnnxUnsqueeze,
        OnnxWhere,
    )
    from skl2onnx.proto import onnx_proto

    opv = container.target_opset
    x = operator.inputs[0]
    edges = np.asarray(operator.raw_operator.boundaries_, np.float32).reshape(1, 1, -1)
    # bucket = number of boundaries <= x, i.e. searchsorted(boundaries, x, side="right")
    ge = OnnxGreaterOrEqual(OnnxUnsqueeze(x, np.array([2], np.int64), op_version=opv), edges, op_version=opv)
    count = OnnxReduceSum(
        OnnxCast(ge, to=onnx_proto.TensorProto.FLOAT, op_version=opv),
        np.array([2], np.int64),
        keepdims=0,
        op_version=opv,
    )
    OnnxWhere(
        OnnxIsNaN(x, op_version=opv), x, count, op_version=opv, output_names=operator.outputs[:1]
    ).add_to(scope, container)


def _date_parts_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    operator.outputs[0].type = FloatTensorType(
        [operator.inputs[0].type.shape[0], len(operator.raw_operator.parts_)]
    )


def _convert_date_parts(scope: Any, operator: Any, container: Any) -> None:
    """ISO date strings → date parts, with the arithmetic of :mod:`prodml.features.dates` (float64)."""
    from onnx import TensorProto

    from prodml.core.project import ISO_DATE

    def const(value: Any, dtype: Any = np.float64) -> str:
        name = str(scope.get_unique_variable_name("date_const"))
        array = np.asarray(value, dtype=dtype)
        if dtype is object:
            container.add_initializer(
                name, TensorProto.STRING, list(array.shape), [v.encode() for v in array.flat]
            )
        else:
            kind = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.INT64
            container.add_initializer(name, kind, list(array.shape), array.ravel().tolist())
        return name

    def op(kind: str, *inputs: str, **attrs: Any) -> str:
        """Add one node; return its (first) output. StringSplit's second output is left unused."""
        outputs = 2 if kind == "StringSplit" else 1
        names = [str(scope.get_unique_variable_name(f"date_{kind.lower()}")) for _ in range(outputs)]
        domain_version = DATE_OPSET if kind.startswith(("String", "Regex")) else None
        container.add_node(
            kind,
            list(inputs),
            names,
            name=scope.get_unique_operator_name(kind),
            op_version=domain_version,
            **attrs,
        )
        return names[0]

    def piece(parts: str, index: int) -> str:  # [n, 1, k] strings → the index-th, [n, 1]
        return op("Gather", parts, const(index, np.int64), axis=2)

    def number(text: str) -> str:
        return op("Cast", text, to=TensorProto.DOUBLE)

    def floor_div(a: str, b: float) -> str:
        return op("Floor", op("Div", a, const(b)))

    def civil_days(y: str, m: str, d: str) -> str:
        early = op("Cast", op("LessOrEqual", m, const(2.0)), to=TensorProto.DOUBLE)
        yy = op("Sub", y, early)
        era = floor_div(yy, 400.0)
        yoe = op("Sub", yy, op("Mul", era, const(400.0)))
        mp = op("Add", m, op("Where", op("LessOrEqual", m, const(2.0)), const(9.0), const(-3.0)))
        doy = op(
            "Sub",
            op("Add", floor_div(op("Add", op("Mul", mp, const(153.0)), const(2.0)), 5.0), d),
            const(1.0),
        )
        doe = op(
            "Add",
            op("Sub", op("Add", op("Mul", yoe, const(365.0)), floor_div(yoe, 4.0)), floor_div(yoe, 100.0)),
            doy,
        )
        return op("Sub", op("Add", op("Mul", era, const(146097.0)), doe), const(719468.0))

    x = operator.inputs[0].full_name
    ok = op("RegexFullMatch", x, pattern=ISO_DATE)
    safe = op("Where", ok, x, const(["1970-01-01"], object))
    ymd = op("StringSplit", safe, delimiter="-", maxsplit=2)
    year, month = number(piece(ymd, 0)), number(piece(ymd, 1))
    # "15", "15T10:30:00" or "15 10:30:00": a "T" and a " " appended make both splits give two pieces
    by_t = op(
        "StringSplit", op("StringConcat", piece(ymd, 2), const(["T"], object)), delimiter="T", maxsplit=1
    )
    by_space = op(
        "StringSplit", op("StringConcat", piece(by_t, 0), const([" "], object)), delimiter=" ", maxsplit=1
    )
    day = number(piece(by_space, 0))
    clock = op("StringConcat", piece(by_t, 1), piece(by_space, 1))  # "10:30:00T", "10:30:00 " or ""
    hour = number(op("StringConcat", const(["0"], object), clock))  # Cast reads the leading number
    days = civil_days(year, month, day)
    shifted = op("Add", days, const(3.0))
    computed = {
        "year": year,
        "month": month,
        "day": day,
        "hour": hour,
        "epoch_days": days,
        "dayofweek": op("Sub", shifted, op("Mul", floor_div(shifted, 7.0), const(7.0))),
        "dayofyear": op("Add", op("Sub", days, civil_days(year, const(1.0), const(1.0))), const(1.0)),
    }
    valid = ok
    for value, low, high in ((month, 1.0, 12.0), (day, 1.0, 31.0), (hour, 0.0, 23.0)):
        inside = op("And", op("GreaterOrEqual", value, const(low)), op("LessOrEqual", value, const(high)))
        valid = op("And", valid, inside)
    stacked = op("Concat", *(computed[p] for p in operator.raw_operator.parts_), axis=1)
    out = op("Where", valid, stacked, const(np.nan))
    container.add_node(
        "Cast",
        [out],
        [operator.outputs[0].full_name],
        to=TensorProto.FLOAT,
        name=scope.get_unique_operator_name("Cast"),
    )


def _parse_catboost_classifier(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
    """Declare a CatBoost classifier's outputs the way skl2onnx does for its own classifiers.

    CatBoost's estimators are not ``ClassifierMixin`` subclasses, so skl2onnx's default parser would
    give them a single output; this declares ``label`` and ``probabilities`` (ZipMap only if asked for).
    """
    from skl2onnx._parse import _apply_zipmap, _get_sklearn_operator_name
    from skl2onnx.common.data_types import Int64TensorType, guess_tensor_type

    options = scope.get_options(model, {"zipmap": True})
    operator = scope.declare_local_operator(_get_sklearn_operator_name(type(model)), model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
    operator.outputs.append(scope.declare_local_variable("probabilities", guess_tensor_type(inputs[0].type)))
    if options["zipmap"] is False:
        return operator.outputs
    return _apply_zipmap(options["zipmap"], scope, model, inputs[0].type, operator.outputs)


def _convert_catboost(scope: Any, operator: Any, container: Any) -> None:
    """Copy the tree ensemble CatBoost exports for itself into the pipeline's graph.

    ``catboost.utils.convert_to_onnx_object`` returns a graph whose first node is the
    TreeEnsembleClassifier/TreeEnsembleRegressor (a classifier's is followed by a ZipMap, left out here:
    skl2onnx adds its own when asked). The node is re-created with this operator's inputs and outputs.
    """
    from catboost.utils import convert_to_onnx_object
    from onnx.helper import get_attribute_value

    onx = convert_to_onnx_object(operator.raw_operator)
    opsets = {d.domain: d.version for d in onx.opset_import}
    nodes = list(onx.graph.node)
    if (
        not nodes
        or not nodes[0].op_type.startswith("TreeEnsemble")
        or any(n.op_type != "ZipMap" for n in nodes[1:])
        or len(nodes) > 2
        or onx.graph.initializer
        or onx.graph.sparse_initializer
    ):
        raise NotImplementedError(f"CatBoost exported an unexpected graph: {[n.op_type for n in nodes]}")
    node = nodes[0]
    if opsets.get(node.domain, 1) > container.target_opset_any_domain(node.domain):
        raise RuntimeError(f"CatBoost needs opset {opsets[node.domain]} of '{node.domain}'")
    container.add_node(
        node.op_type,
        [operator.inputs[0].full_name],
        [o.full_name for o in operator.outputs],
        op_domain=node.domain,
        op_version=opsets.get(node.domain),
        name=scope.get_unique_operator_name(node.op_type),
        **{a.name: get_attribute_value(a) for a in node.attribute},
    )


@functools.cache
def _register_converters() -> None:
    """Teach skl2onnx prodml's transformers and the boosting libraries that are installed."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    from prodml.features.transforms import Bucketize, DateParts, SignedLog1p

    update_registered_converter(SignedLog1p, "ProdmlSignedLog1p", _one_to_one_shape, _convert_signed_log1p)
    update_registered_converter(Bucketize, "ProdmlBucketize", _one_to_one_shape, _convert_bucketize)
    update_registered_converter(DateParts, "ProdmlDateParts", _date_parts_shape, _convert_date_parts)
    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            options=classifier_options,
        )
        update_registered_converter(
            LGBMRegressor,
            "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes,
            convert_lightgbm,
            options={"split": None},
        )
    except ImportError:
        pass
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(
            XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=classifier_options,
        )
        update_registered_converter(
            XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
        )
    except ImportError:
        pass
    try:
        from catboost import CatBoostClassifier, CatBoostRegressor

        update_registered_converter(
            CatBoostClassifier,
            "CatBoostCatBoostClassifier",
            calculate_linear_classifier_output_shapes,
            _convert_catboost,
            parser=_parse_catboost_classifier,
            options=classifier_options,
        )
        update_registered_converter(
            CatBoostRegressor,
            "CatBoostCatBoostRegressor",
            calculate_linear_regressor_output_shapes,
            _convert_catboost,
        )
    except ImportError:
        pass


def onnx_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The ONNX feeds for a frame of feature columns: float32 or string, shape ``[n, 1]`` each."""
    feeds = {}
    for name in frame.columns:
        col = frame[name]
        if col.dtype == object or isinstance(col.dtype, pd.StringDtype | pd.CategoricalDtype):
            feeds[name] = col.astype(object).fillna("").astype(str).to_numpy(dtype=object).reshape(-1, 1)
        else:
            feeds[name] = col.to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
    return feeds


def to_onnx(pipeline: Any, sample: pd.DataFrame, *, name: str = "prodml") -> Any:
    """Convert a fitted pipeline whose input is ``sample``'s columns into an ``onnx.ModelProto``.

    Raises:
        ExportError: a step has no ONNX converter, or conversion fails.
        MissingDependency: skl2onnx is not installed.
    """
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependency("skl2onnx", "train") from exc
    _register_converters()
    types = [
        (c, StringTensorType([None, 1]) if v.dtype == object else FloatTensorType([None, 1]))
        for c, v in onnx_inputs(sample.head(1)).items()
    ]
    estimator = pipeline.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    opset = TARGET_OPSET | ({"": DATE_OPSET} if _has_dates(pipeline) else {})
    try:
        model = convert_sklearn(pipeline, name=name, initial_types=types, options=options, target_opset=opset)
    except Exception as exc:  # skl2onnx raises many types; all mean "cannot convert"
        raise ExportError(
            f"cannot convert the model to ONNX: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
            hint="choose an estimator and transforms that prodml exports (see README, 'Estimators')",
        ) from exc
    if hasattr(estimator, "predict_proba"):
        outputs = [o.name for o in model.graph.output]
        if outputs != ["label", "probabilities"]:  # pragma: no cover - converter contract
            raise ExportError(f"unexpected ONNX outputs {outputs}")
    _rename_inputs(model, [c for c, _ in types])
    return model


def _has_dates(estimator: Any) -> bool:
    from prodml.features.dates import DateParts

    if isinstance(estimator, DateParts):
        return True
    children = [s[1] for s in getattr(estimator, "steps", [])]
    children += [t[1] for t in getattr(estimator, "transformers", [])]
    return any(_has_dates(c) for c in children if not isinstance(c, str))


def _rename_inputs(model: Any, names: list[str]) -> None:
    """Give the graph's inputs the columns' own names (skl2onnx turns ``a/b`` into ``a_b``)."""
    graph = model.graph
    renamed = {i.name: n for i, n in zip(graph.input, names, strict=True) if i.name != n}
    if not renamed:
        return
    taken = {o for node in graph.node for o in node.output} | {i.name for i in graph.initializer}
    if taken & set(renamed.values()):  # pragma: no cover - an inner name equal to a column name
        raise ExportError(
            f"a graph variable is named like an input column: {sorted(taken & set(renamed.values()))}"
        )
    for i in graph.input:
        i.name = renamed.get(i.name, i.name)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]


def predict_onnx(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """Run the ONNX graph on a frame: probabilities ``(n, k)`` for classifiers, values ``(n,)`` else."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, onnx_inputs(frame))
    if len(outputs) == 2:  # classifier: label, probabilities
        return np.asarray(outputs[1])
    return np.asarray(outputs[0]).reshape(len(frame))


def check_parity(
    pipeline: Any, model: Any, frame: pd.DataFrame, *, atol: float = 1e-4, rtol: float = 1e-5
) -> dict[str, float]:
    """Compare ONNX and native predictions on ``frame``; raise ExportError beyond ``atol + rtol*|y|``.

    The frame's numeric columns are cast to float32 first (what the graph receives), so both sides see
    the same values and a tree split exactly at a rounded value cannot make them disagree.

    Returns:
        ``{"max_abs_diff": …, "rows": …}``.
    """
    frame32 = frame.copy()
    for c in frame32.columns:
        if frame32[c].dtype != object:
            frame32[c] = frame32[c].astype(np.float32)
    native = (
        pipeline.predict_proba(frame32) if hasattr(pipeline, "predict_proba") else pipeline.predict(frame32)
    )
    onnx_pred = predict_onnx(model, frame32)
    native = np.asarray(native, dtype=np.float64).reshape(onnx_pred.shape)
    diff = np.abs(native - onnx_pred.astype(np.float64))
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    over = diff > atol + rtol * np.abs(native)
    if over.any() or np.isnan(onnx_pred).sum() != np.isnan(native).sum():
        bad = int(over.any(axis=-1).sum()) if over.ndim > 1 else int(over.sum())
        raise ExportError(
            f"the ONNX graph disagrees with the native model on {bad} of {len(frame)} rows "
            f"(max |diff| {worst:.3g} > {atol:g})",
            hint="this is a converter bug or an unsupported option; the model was not registered",
        )
    return {"max_abs_diff": worst, "rows": float(len(frame))}
