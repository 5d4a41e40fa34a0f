"""Sequence models on each customer's event history: point-in-time correct, and they learn churn."""

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import TensorDataset

from prodml.core.errors import DataError
from prodml.data.simulate import simulate
from prodml.dl.modules import build_module
from prodml.dl.params import parse_params
from prodml.dl.sequences import STEP_FEATURES, SequenceData, event_sequences

T0 = datetime(2025, 1, 1)


def day(d: float) -> datetime:
    return T0 + timedelta(days=d)


def tiny_world() -> dict[str, pa.Table]:
    ts = pa.timestamp("us")
    return {
        "sessions": pa.table(
            {
                "customer_id": [1, 1, 1, 2],
                "ts": pa.array([day(1), day(5), day(10), day(3)], ts),
                "duration_min": [10.0, 20.0, 30.0, 5.0],
                "device": ["web"] * 4,
            }
        ),
        "payments": pa.table(
            {"customer_id": [1], "ts": pa.array([day(2)], ts), "amount": [9.99], "failed": [True]}
        ),
        "tickets": pa.table({"customer_id": [2], "ts": pa.array([day(20)], ts), "severity": [3]}),
        "labels": pa.table(
            {
                "customer_id": [1, 1, 2, 3],
                "prediction_ts": pa.array([day(5), day(30), day(4), day(4)], ts),
                "churned": [0, 1, 0, 1],
            }
        ),
    }


def test_only_events_strictly_before_the_label_time() -> None:
    data = event_sequences(tiny_world(), max_len=4, window_days=90)
    assert data.events.shape == (4, 4, len(STEP_FEATURES))
    # customer 1 at day 5: the session of day 1 and the failed payment of day 2; day 5 itself is excluded
    assert data.lengths.tolist() == [2, 4, 1, 1]
    first = data.events[0]
    assert first[0, 0] == 1.0  # a session ...
    assert first[1, 1] == 1.0  # ... then a payment
    assert first[1, 5] == 1.0  # that failed
    assert first[0, 7] == pytest.approx(4 / 90)  # 4 days before the label time
    assert not first[2:].any()  # padding
    # customer 1 at day 30: max_len 4 keeps the latest four of its four events
    assert data.events[1, 3, 3] == pytest.approx(np.log1p(30.0) / 3)
    # customer 2 at day 4: its ticket of day 20 is in the future
    assert data.events[2, 0, 0] == 1.0
    assert not data.events[2, :, 2].any()
    # customer 3 has no events: one all-zero step
    assert not data.events[3].any()
    assert data.y.tolist() == [0, 1, 0, 1]


def test_window_and_max_len_cut_the_history() -> None:
    data = event_sequences(tiny_world(), max_len=2, window_days=90)
    assert data.lengths[1] == 2  # the latest two of customer 1's four events before day 30: days 5 and 10
    assert data.events[1, 0, 3] == pytest.approx(np.log1p(20.0) / 3)
    assert data.events[1, 1, 3] == pytest.approx(np.log1p(30.0) / 3)
    narrow = event_sequences(tiny_world(), max_len=8, window_days=21)
    assert narrow.lengths[1] == 1  # within 21 days of day 30: only the session of day 10
    with pytest.raises(DataError, match="tickets"):
        event_sequences({k: v for k, v in tiny_world().items() if k != "tickets"})


@pytest.fixture(scope="module")
def world_sequences() -> SequenceData:
    return event_sequences(simulate(customers=400, days=240, seed=5), max_len=32)


@pytest.mark.parametrize(
    ("kind", "minimum"), [("torch_gru", 0.8), ("torch_lstm", 0.8), ("torch_transformer", 0.78)]
)
def test_sequence_models_learn_churn(world_sequences: SequenceData, kind: str, minimum: float) -> None:
    from prodml.dl.trainer import Trainer

    d = world_sequences
    cut = np.quantile(d.times, 0.8)  # the latest 20% of label times are the holdout
    train, test = d.times < cut, d.times >= cut
    params = parse_params(
        kind, {"epochs": 4, "lr": 3e-3, "batch_size": 128, "d_model": 16, "heads": 2, "max_len": 32}
    )
    torch.manual_seed(0)
    module = build_module(kind, params, inputs=len(STEP_FEATURES), outputs=2)
    data = TensorDataset(*(torch.from_numpy(a[train]) for a in (d.events, d.lengths, d.y)))
    history = Trainer(module, params).fit(data)
    assert history.curve("train_loss")[-1] < history.curve("train_loss")[0]
    with torch.no_grad():
        scores = module(torch.from_numpy(d.events[test]), torch.from_numpy(d.lengths[test])).softmax(-1)[:, 1]
    assert roc_auc_score(d.y[test], scores.numpy()) >= minimum
