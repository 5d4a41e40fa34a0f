import prodml.core as core
from prodml.core.errors import (
    ConfigError,
    ContractViolation,
    DataError,
    MissingDependency,
    ProdmlError,
    SourceNotFound,
)


def test_every_error_carries_its_transport_codes() -> None:
    classes = [
        getattr(core, n)
        for n in core.__all__
        if n.endswith(("Error", "Violation", "Found", "Input", "Unavailable", "Dependency"))
    ]
    assert ProdmlError in classes
    for cls in classes:
        assert issubclass(cls, ProdmlError)
        assert 100 <= cls.http_status < 600
        assert cls.grpc_code.isupper()
        assert 0 < cls.exit_code < 128
    assert ConfigError.exit_code == 2
    assert ContractViolation.exit_code == 3


def test_subclass_refines_codes_and_keeps_message_and_hint() -> None:
    err = SourceNotFound("no file matches data/x.parquet", hint="check the path")
    assert isinstance(err, DataError)
    assert (err.http_status, err.grpc_code, err.exit_code) == (404, "NOT_FOUND", 4)
    assert str(err) == "no file matches data/x.parquet\n  hint: check the path"


def test_missing_dependency_names_the_pip_command() -> None:
    err = MissingDependency("psycopg", "postgres")
    assert err.hint == "pip install 'prodml[postgres]'"


def test_public_api_is_pinned() -> None:
    assert sorted(core.__all__) == [
        "ConfigError",
        "ContractViolation",
        "DataError",
        "FeatureError",
        "InvalidInput",
        "MissingDependency",
        "NotFound",
        "ProdmlError",
        "Project",
        "Settings",
        "SourceNotFound",
        "Unavailable",
        "load_project",
    ]


def test_stage_packages_pin_their_public_api() -> None:
    import prodml.data
    import prodml.features

    assert sorted(prodml.data.__all__) == [
        "Catalog",
        "ValidationReport",
        "Violation",
        "read_files",
        "validate_project",
        "validate_tables",
    ]
    assert sorted(prodml.features.__all__) == [
        "TrainingFrame",
        "aggregate_sql",
        "build_features",
        "build_training_frame",
    ]
    for module in (prodml.data, prodml.features):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_every_prodml_error_class_is_drawn_in_the_tree_with_its_codes() -> None:
    import re

    import prodml.core.errors as errors
    from prodml.export.onnx import ExportError
    from prodml.export.package import TamperedArtifact
    from prodml.registry.mlflow import RegistryError
    from prodml.registry.promotion import GateRefused

    tree = errors.__doc__ or ""
    classes = [getattr(errors, n) for n in errors.__all__]
    for cls in [*classes, ExportError, TamperedArtifact, RegistryError, GateRefused]:
        line = rf"{cls.__name__}\s+exit {cls.exit_code}\s+HTTP {cls.http_status}\s+{cls.grpc_code}\b"
        assert re.search(line, tree), f"{cls.__name__} is not drawn in core/errors.py with its codes"


def test_field_level_details_are_one_attribute() -> None:
    from prodml.core.errors import InvalidInput

    err = InvalidInput("2 columns", fields=[{"field": "age", "error": "missing"}])
    assert err.fields == [{"field": "age", "error": "missing"}]
    config = ConfigError("bad file", problems=[("serve.port", "too large")])
    assert config.fields == [{"field": "serve.port", "error": "too large"}]
    assert config.problems == [("serve.port", "too large")]
    assert ProdmlError("x").fields == []
