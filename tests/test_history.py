"""AutoLRS's per-step history is kept as columns: the same records, a fraction of the memory."""

from __future__ import annotations

import io
import math
import tracemalloc
import warnings

import pytest
import torch
from torch import nn

from autolr import AutoLRS, HistoryRecord, StateError
from autolr._autolrs._history import History

from .conftest import scripted_losses


def test_records_read_back_as_written() -> None:
    h = History()
    h.append(0, 0, "warmup", 0.1, 2.0)
    h.extend(1, 1, "search", [0.2, 0.3], [1.5, math.nan])
    h.append(3, 1, "exploit", 0.3, None)  # still on the device
    h.set_forecast(-2, math.inf)
    recs = h.records()
    assert recs[:2] + recs[3:] == [
        HistoryRecord(0, 0, "warmup", 0.1, 2.0),
        HistoryRecord(1, 1, "search", 0.2, 1.5),
        HistoryRecord(3, 1, "exploit", 0.3, None),
    ]
    assert recs[2][:4] == (2, 1, "search", 0.3) and recs[2].forecast == math.inf
    assert math.isnan(recs[2].loss)  # a reported NaN stays NaN, unlike a loss not yet read
    assert h[-1] == h[3] and len(h) == 4
    h.set_loss(3, 0.75)
    assert h[3].loss == 0.75
    assert [r.forecast for r in h] == [None, None, math.inf, None]
    assert [r.phase for r in h] == ["warmup", "search", "search", "exploit"]
    assert [r.lr for r in h] == [0.1, 0.2, 0.3, 0.3]
    with pytest.raises(IndexError):
        h.set_forecast(4, 1.0)
    with pytest.raises(IndexError):
        h[-5]


def _run(steps: int) -> AutoLRS:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    val_fn = lambda: float(nn.functional.mse_loss(model(x), y))  # noqa: E731
    tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 0.5), max_steps=steps, seed=0, val_fn=val_fn)
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tuner.step(loss.item())
    return tuner


def test_a_runs_history_survives_a_weights_only_checkpoint() -> None:
    tuner = _run(300)
    hist = tuner.history
    assert [r.step for r in hist] == list(range(300))
    assert sum(r.forecast is not None for r in hist) == 4  # one per candidate window
    assert {r.phase for r in hist} == {"warmup", "search", "exploit"}
    buf = io.BytesIO()
    torch.save(tuner.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    model = nn.Linear(4, 1)
    again = AutoLRS(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        lr_bounds=(1e-3, 0.5),
        max_steps=300,
        seed=0,
        val_fn=lambda: 0.0,
    )
    again.load_state_dict(state)
    assert again.history == hist
    assert again.schedule == tuner.schedule == [r.lr for r in hist]


@scripted_losses
def test_history_costs_tens_of_bytes_a_step() -> None:
    # As named tuples a step cost ~180 bytes (a million-step run held ~180 MB).
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    n = 60_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuner = AutoLRS(model, opt, lr_bounds=(1e-3, 0.5), max_steps=n, seed=0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            tuner.step(1.0 + 0.01 * (i % 5))
        tuner._drain_fast()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(tuner._records) == n
    assert grown / n < 60, f"{grown / n:.0f} bytes a step"


def test_the_state_holds_tensors_and_is_checked() -> None:
    h = History()
    h.extend(0, 0, "warmup", [0.1, 0.2, 0.3], [1.0, 0.9, 0.8])
    h.set_forecast(1, 0.5)
    state = h.to_state()
    assert [state[k].dtype for k in ("step", "stage", "phase", "lr", "loss")] == [
        torch.int64,
        torch.int64,
        torch.uint8,
        torch.float64,
        torch.float64,
    ]
    back = History.from_state(state)
    assert back.records() == h.records()
    assert History.from_state(History().to_state()).records() == []
    for index, value in (([1, 1], [0.5, 0.6]), ([3], [0.5]), ([-1], [0.5])):
        bad = {
            **state,
            "forecast": {
                "index": torch.tensor(index),
                "value": torch.tensor(value, dtype=torch.float64),
            },
        }
        with pytest.raises(StateError, match=r"forecast\.index is not increasing within"):
            History.from_state(bad)
    with pytest.raises(StateError, match=r"history\.step is a 2-d torch\.int64 tensor"):
        History.from_state({**state, "step": state["step"].reshape(3, 1)})
    with pytest.raises(StateError, match=r"history\.stage is NoneType, not a tensor"):
        History.from_state({k: v for k, v in state.items() if k != "stage"})


def test_reading_the_history_again_builds_only_new_and_changed_records() -> None:
    h = History()
    h.extend(0, 0, "search", [0.1, 0.2], [1.0, 0.9])
    h.append(2, 0, "exploit", 0.2, None)
    first = h.records()
    assert first[2].loss is None and first[1].forecast is None
    h.set_forecast(1, 0.5)  # changed after it was built
    h.set_loss(2, 0.8)
    h.append(3, 0, "exploit", 0.2, 0.7)
    again = h.records()
    assert again == [
        HistoryRecord(0, 0, "search", 0.1, 1.0),
        HistoryRecord(1, 0, "search", 0.2, 0.9, 0.5),
        HistoryRecord(2, 0, "exploit", 0.2, 0.8),
        HistoryRecord(3, 0, "exploit", 0.2, 0.7),
    ]
    assert again is not h.records()  # a new list each time: the caller may change it
    assert again[0] is first[0]  # unchanged records are not rebuilt
    assert first[1].forecast is None and first[2].loss is None  # earlier lists stay as read
    assert not h._dirty
    h.append(4, 0, "exploit", 0.2, None)
    h.set_loss(4, 0.6)  # never built: nothing to rebuild later
    assert not h._dirty and h.records()[4].loss == 0.6


def test_records_built_in_two_reads_carry_their_own_forecast_and_unread_loss() -> None:
    # The second read builds records 3-4 only; each must look up its own index.
    h = History()
    h.extend(0, 0, "search", [0.1, 0.2, 0.3], [1.0, 0.9, 0.8])
    h.set_forecast(0, 0.25)  # a forecast on the very first record
    assert [r.forecast for r in h.records()] == [0.25, None, None]
    h.append(3, 0, "search", 0.3, 0.7)
    h.set_forecast(3, 0.5)  # the record right after the built ones
    h.append(4, 0, "exploit", 0.3, None)
    recs = h.records()
    assert [r.forecast for r in recs] == [0.25, None, None, 0.5, None]
    assert [r.loss for r in recs] == [1.0, 0.9, 0.8, 0.7, None]
    back = History.from_state(h.to_state())  # a forecast at index 0 loads
    assert back.forecast == {0: 0.25, 3: 0.5}


def test_the_state_is_on_the_cpu_whatever_the_default_device() -> None:
    h = History()
    h.append(0, 0, "search", 0.1, 1.0)
    h.set_forecast(0, 0.5)
    with torch.device("meta"):  # stands in for a CUDA default device
        states = [h.to_state(), History().to_state()]
    for state in states:
        tensors = [state[k] for k in ("step", "stage", "phase", "lr", "loss")]
        tensors += [state["forecast"]["index"], state["forecast"]["value"]]
        assert {t.device.type for t in tensors} == {"cpu"}
    assert History.from_state(states[0]).records() == h.records()


def test_each_refusal_of_a_state_names_what_is_wrong() -> None:
    h = History()
    h.extend(0, 0, "search", [0.1, 0.2, 0.3, 0.4], [1.0, 0.9, 0.8, 0.7])
    state = h.to_state()
    fc = state["forecast"]
    # later entries all above the first, but not increasing
    unordered = {"index": torch.tensor([0, 3, 2]), "value": torch.zeros(3, dtype=torch.float64)}
    cases = [
        ({**state, "forecast": unordered}, r"^history\.forecast\.index is not increasing within"),
        (
            {**state, "forecast": {**fc, "index": fc["index"].float()}},
            r"^history\.forecast\.index is",
        ),
        (
            {**state, "forecast": {**fc, "value": fc["value"].float()}},
            r"^history\.forecast\.value is",
        ),
        ({**state, "lr": state["lr"][:3]}, r"^the history columns have different lengths$"),
    ]
    for bad, message in cases:
        with pytest.raises(StateError, match=message):
            History.from_state(bad)
