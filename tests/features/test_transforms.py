import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import check_estimator

from prodml.core.errors import FeatureError
from prodml.core.project import Features
from prodml.features.transforms import Bucketize, SignedLog1p, build_preprocessor


@pytest.mark.parametrize("estimator", [SignedLog1p(), Bucketize([0.0, 1.0])])
def test_scikit_learn_contract(estimator: object) -> None:
    results = check_estimator(estimator, on_fail=None, on_skip=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) > 30


def test_signed_log_and_buckets() -> None:
    x = np.array([[-np.e + 1], [0.0], [np.e - 1], [np.nan]])
    np.testing.assert_allclose(SignedLog1p().fit_transform(x).ravel(), [-1, 0, 1, np.nan])
    b = Bucketize([25, 35]).fit_transform(np.array([[18.0], [25.0], [34.9], [90.0], [np.nan]]))
    np.testing.assert_array_equal(b.ravel(), [0, 1, 1, 2, np.nan])


def test_preprocessor_applies_declared_transforms_and_encodes_categories() -> None:
    features = Features.model_validate(
        {
            "transforms": [
                {"column": "age", "op": "bucketize", "boundaries": [30]},
                {"column": "n", "op": "log"},
                {"column": "fee", "op": "scale"},
            ]
        }
    )
    frame = pd.DataFrame(
        {
            "age": [20, 40, 30],
            "n": [0.0, 9.0, 99.0],
            "fee": [1.0, 2.0, 3.0],
            "plan": ["a", "b", "a"],
            "raw": [5, 6, 7],
        }
    )
    pre = build_preprocessor(features, list(frame.columns), categorical=["plan"]).fit(frame)
    out = pd.DataFrame(pre.transform(frame), columns=pre.get_feature_names_out())
    assert list(out.columns) == ["age", "n", "fee", "plan_a", "plan_b", "raw"]
    assert out["age"].tolist() == [0, 1, 1]
    np.testing.assert_allclose(out["n"], np.log1p([0, 9, 99]))
    assert out["fee"].mean() == pytest.approx(0)
    assert out["plan_a"].tolist() == [1, 0, 1]
    unseen = frame.assign(plan=["zzz", "a", "b"])
    assert pre.transform(unseen)[0, 3:5].tolist() == [0, 0]  # unknown category: all zeros, no error


def test_transform_of_unknown_column() -> None:
    features = Features.model_validate({"transforms": [{"column": "agee", "op": "scale"}]})
    with pytest.raises(FeatureError, match="'agee' is not a feature column"):
        build_preprocessor(features, ["age"])
