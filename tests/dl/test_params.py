import pytest

from prodml.core.errors import ConfigError
from prodml.dl.params import KINDS, is_torch, parse_params


def test_defaults_and_overrides() -> None:
    params = parse_params("torch_mlp", {"epochs": 3, "hidden": [8, 4], "scheduler": "cosine"})
    assert params.epochs == 3
    assert params.hidden == (8, 4)
    assert params.optimizer == "adamw"
    assert all(is_torch(k) for k in KINDS)
    assert not is_torch("hist_gradient_boosting")


def test_unknown_key_names_its_path_and_the_known_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params("torch_cnn", {"learning_rate": 0.1})
    assert str(caught.value).startswith("model.params.learning_rate:")
    assert "lr" in (caught.value.hint or "")
    assert caught.value.problems[0][0] == "model.params.learning_rate"


def test_bad_value_and_bad_combination() -> None:
    with pytest.raises(ConfigError, match=r"model\.params\.optimizer"):
        parse_params("torch_mlp", {"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match=r"model\.params\.epochs"):
        parse_params("torch_mlp", {"epochs": 0})
    with pytest.raises(ConfigError, match="not divisible by heads=3"):
        parse_params("torch_transformer", {"d_model": 32, "heads": 3})
    with pytest.raises(ConfigError, match="not a torch architecture"):
        parse_params("random_forest", {})
