"""train_model: AdamW with warm-up and cosine, per-epoch callbacks, NaN detection, seeded reproducibility, and a run
cut short of its schedule that resumes from its checkpoint."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.compiler import compile_model
from nas.data import load_data
from nas.evaluate.train import TrainResult, train_model, warmup_cosine


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", resolution=8, limit=400)


def small_net(data) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(data.channels, 16, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * (data.resolution // 2) ** 2, data.num_classes))


def test_training_improves_accuracy_on_an_easy_task(digits):
    model = small_net(digits)
    result = train_model(model, digits, epochs=4, batch_size=32)
    assert isinstance(result, TrainResult) and len(result.history) == 4
    assert result.accuracy == result.history[-1] > 0.8  # chance is 0.1
    assert result.history[-1] > result.history[0] and result.seconds > 0
    assert not model.training
    # the mean training loss of each epoch: it starts near ln(10), the loss of a uniform guess, and falls
    assert len(result.losses) == 4 and 1.5 < result.losses[0] < 2.6
    assert all(earlier > later for earlier, later in zip(result.losses, result.losses[1:]))


def test_on_epoch_sees_each_epoch_and_its_exceptions_propagate(digits):
    seen = []
    result = train_model(small_net(digits), digits, epochs=3, on_epoch=lambda e, acc: seen.append((e, acc)))
    assert seen == list(enumerate(result.history, start=1))

    class Pruned(Exception):
        pass

    def prune_at_two(epoch: int, accuracy: float) -> None:
        seen.append(epoch)
        if epoch == 2:
            raise Pruned

    seen.clear()
    with pytest.raises(Pruned):
        train_model(small_net(digits), digits, epochs=5, on_epoch=prune_at_two)
    assert seen == [1, 2]


def test_a_nan_loss_raises_floating_point_error(digits):
    model = small_net(digits)
    with torch.no_grad():
        model[-1].bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        train_model(model, digits, epochs=2)


def test_same_seed_same_result_and_the_callers_rng_is_untouched(digits):
    state = torch.random.get_rng_state()
    first, second, other = small_net(digits), small_net(digits), small_net(digits)
    a = train_model(first, digits, epochs=2, seed=7)
    b = train_model(second, digits, epochs=2, seed=7)
    train_model(other, digits, epochs=2, seed=8)
    assert a.history == b.history
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(first.parameters(), other.parameters()))
    assert torch.equal(torch.random.get_rng_state(), state)


def dropout_net(data) -> nn.Module:
    """A net that draws random numbers while it trains, so a resumed run must restore the generators too."""
    net = small_net(data)
    return nn.Sequential(*net[:-1], nn.Dropout(0.3), net[-1])


def test_a_run_cut_short_of_its_schedule_resumes_from_its_checkpoint_with_the_uninterrupted_result(digits, tmp_path):
    whole = dropout_net(digits)
    uninterrupted = train_model(whole, digits, epochs=4, seed=3)

    checkpoint = tmp_path / "checkpoints" / "genome.pt"
    first = train_model(dropout_net(digits), digits, epochs=2, schedule_epochs=4, seed=3, checkpoint=checkpoint)
    assert first.history == uninterrupted.history[:2]  # the same learning rates so far
    assert checkpoint.is_file()

    seen = []
    resumed = dropout_net(digits)
    rest = train_model(resumed, digits, epochs=4, schedule_epochs=4, seed=3, checkpoint=checkpoint,
                       on_epoch=lambda e, acc: seen.append((e, acc)))
    assert rest.history == uninterrupted.history and seen == list(enumerate(uninterrupted.history, start=1))
    assert first.losses == uninterrupted.losses[:2] and rest.losses == uninterrupted.losses
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), resumed.parameters()))
    assert not checkpoint.exists()  # the schedule is done: nothing left to resume


def test_a_checkpoint_of_another_plan_is_ignored(digits, tmp_path):
    checkpoint = tmp_path / "genome.pt"
    train_model(small_net(digits), digits, epochs=1, schedule_epochs=3, seed=1, checkpoint=checkpoint)
    other_seed = train_model(small_net(digits), digits, epochs=3, seed=2, checkpoint=checkpoint)
    fresh = train_model(small_net(digits), digits, epochs=3, seed=2)
    assert other_seed.history == fresh.history
    checkpoint.write_bytes(b"cut short by a kill")
    assert train_model(small_net(digits), digits, epochs=3, seed=2, checkpoint=checkpoint).history == fresh.history
    with pytest.raises(ValueError, match="schedule_epochs"):
        train_model(small_net(digits), digits, epochs=3, schedule_epochs=2)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    factor = warmup_cosine(total_steps=110, warmup_steps=10)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor(60) == pytest.approx(0.5) and factor(110) == pytest.approx(0.0)
    assert factor(10) == pytest.approx(1.0) and factor(11) < 1.0


def test_a_compiled_genome_trains_on_synthetic():
    """The search's path: a genome at the data's resolution, compiled and trained for one epoch."""
    data = load_data("synthetic", resolution=16, limit=128)
    genome = {
        "name": "tiny_hybrid", "input": {"channels": data.channels, "resolution": data.resolution},
        "num_classes": data.num_classes, "stem": {"type": "conv", "kernel": 2, "stride": 2},
        "stages": [
            {"depth": 1, "width": 16, "block": {"mixer": {"type": "sepconv", "kernel": 3}}},
            {"depth": 1, "width": 32, "downsample": {"type": "conv", "kernel": 2, "stride": 2},
             "block": {"mixer": {"type": "attention", "heads": 2}}},
        ],
    }
    result = train_model(compile_model(genome, seed=0), data, epochs=1, batch_size=32)
    assert 0.0 <= result.accuracy <= 1.0 and len(result.history) == 1
