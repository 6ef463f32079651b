"""The cascade: a data-free screen of many genomes, then trials picked from it by a surrogate of the trials so far
(``nas.search.cascade``, ``nas.search.surrogate``), as the default sampler of ``nas.search``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy.stats import kendalltau

import nas
from nas.cost import analytic_cost
from nas.errors import InputError
from nas.evaluate.proxy import objective_identity, objective_scores
from nas.search.cascade import (
    RANKED_WITH_OBJECTIVE,
    SCREEN_ATTR,
    SCREEN_FILE,
    ZERO_COST_FEATURES,
    CascadeSampler,
    first_rung_order,
    rung_targets,
    screen,
    stage_results,
    surrogate_summary,
    zero_cost_features,
)
from nas.search.params import option_labels
from nas.search.rundir import open_study, read_run
from nas.search.surrogate import Encoder, Surrogate, held_out_tau
from nas.space import choices, read_space
from tests.test_search import SMALL_SPACE

TINY = read_space("tiny")[0]


def total_width(genome, model) -> float:
    """A stand-in objective a surrogate can learn from the genome's choices: the widths of its stages."""
    return float(sum(stage.width * stage.depth for stage in genome.stages))


def everything(cost) -> bool:
    return True


def test_the_screen_keeps_distinct_genomes_within_budget_and_is_the_same_for_a_seed(tmp_path: Path):
    budget = 8e6
    pool = screen(TINY, 400, seed=3, within_budget=lambda cost: cost.flops <= budget)
    assert pool.drawn == 400 and 0 < len(pool) <= pool.valid <= 400
    assert len(set(pool.hashes)) == len(pool)
    assert all(flops <= budget for _, flops in pool.costs)
    assert pool.hashes == screen(TINY, 400, seed=3, within_budget=lambda cost: cost.flops <= budget).hashes
    assert pool.hashes != screen(TINY, 400, seed=4, within_budget=lambda cost: cost.flops <= budget).hashes

    # Cached in the run directory: a resumed run or a worker reads the same pool back.
    written = screen(TINY, 100, seed=0, within_budget=everything, run_dir=tmp_path)
    assert (tmp_path / SCREEN_FILE).exists()
    read = screen(TINY, 100, seed=0, within_budget=everything, run_dir=tmp_path)
    assert (read.hashes, read.params, read.structural, read.data_free) == (
        written.hashes, written.params, written.structural, written.data_free)


def test_processes_share_the_screen_and_find_the_same_pool():
    alone = screen(TINY, 1200, seed=1, within_budget=lambda cost: cost.flops <= 8e6)
    shared = screen(TINY, 1200, seed=1, within_budget=lambda cost: cost.flops <= 8e6, processes=2)
    assert (shared.hashes, shared.params, shared.costs, shared.structural, shared.data_free, shared.valid) == (
        alone.hashes, alone.params, alone.costs, alone.structural, alone.data_free, alone.valid)


def test_the_screen_stops_once_a_small_space_is_drawn_whole():
    pool = screen(SMALL_SPACE, 10_000, seed=0, within_budget=everything)
    assert len(pool) == 40  # every genome of the space
    assert pool.drawn < 1_000


def test_the_encoder_has_a_column_per_option_and_per_range():
    found = choices(SMALL_SPACE)
    encoder = Encoder(found)
    mixer = next(c for c in found if c.path == "stages[0].block.mixer")
    assert [f"{mixer.path}={label}" for label in option_labels(mixer)] == [
        c for c in encoder.columns if c.startswith(f"{mixer.path}=")]
    assert "stages[0].depth" in encoder.columns and encoder.columns[-3:] == ["log10_params", "log10_flops",
                                                                             "structural"]
    row = encoder.row({"stages[0].depth": 2, mixer.path: "pooling" if "pooling" in option_labels(mixer) else
                       option_labels(mixer)[1]}, 1e5, 1e7, 3.0)
    assert len(row) == len(encoder.columns)
    assert row[encoder.columns.index("stages[0].depth")] == 2
    kernel = next(c for c in encoder.columns if "kernel" in c)  # a choice this genome never made
    assert row[encoder.columns.index(kernel)] in (0.0, -1.0)
    assert row[-3:] == [5.0, 7.0, 3.0]


def test_the_surrogate_ranks_held_out_results_it_can_learn_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.random((40, 6))
    learnable = 3 * x[:, 0] + x[:, 1]
    assert held_out_tau(x, learnable) > 0.6
    assert abs(held_out_tau(x, rng.random(40))) < 0.35
    assert held_out_tau(x[:3], learnable[:3]) is None  # too few results to hold one out
    # the interval around the held-out tau, by bootstrap over the results: it holds the tau and narrows as the
    # results grow
    few, many = Surrogate(seed=0).fit(x[:10], learnable[:10]), Surrogate(seed=0).fit(x, learnable)
    for fitted in (few, many):
        low, high = fitted.held_out_interval()
        assert low <= fitted.held_out_tau() <= high
    assert np.subtract(*many.held_out_interval()[::-1]) < np.subtract(*few.held_out_interval()[::-1])
    assert Surrogate(seed=0).fit(x[:3], learnable[:3]).held_out_interval() is None
    mean, spread = Surrogate(seed=0).fit(x, learnable).predict(x[:5])
    assert mean.shape == spread.shape == (5,) and (spread >= 0).all()
    assert np.corrcoef(mean, learnable[:5])[0, 1] > 0.8


def test_the_surrogate_learns_only_the_part_of_a_result_that_is_not_known():
    """A proxy score is its data-free part, known for every screened genome, plus a zero-cost part: the forest is
    fitted on the rest, and the known part is added back to each prediction and held-out figure."""
    rng = np.random.default_rng(0)
    x = rng.random((40, 6))
    known = 5 * rng.random(40)  # varies far more than the rest, and no column of x says it
    rest = 0.3 * x[:, 0]
    assert held_out_tau(x, known + rest, known=known) > 0.95
    assert held_out_tau(x, known + rest) < 0.3  # the forest alone cannot see the known part
    surrogate = Surrogate(seed=0).fit(x, known + rest, known)
    mean, _ = surrogate.predict(x[:5], known[:5])
    assert np.abs(mean - (known + rest)[:5]).max() < 0.1
    assert np.abs(surrogate.predict(x[:5])[0] - rest[:5]).max() < 0.1  # without it: the rest alone


def test_the_surrogate_follows_an_estimate_of_the_result_through_a_line_where_that_ranks_better_held_out():
    """A training stage reads the objective's value beside dozens of other columns. Over 20 results a forest uses
    that column too seldom; where a line in it ranks the results better held out, the surrogate keeps the line
    (plus a forest on what it leaves), and where the column says nothing it keeps the forest."""
    rng = np.random.default_rng(0)
    x = rng.random((220, 60))
    truth = x[:, :8].sum(axis=1)  # no single column the forest could split on alone
    estimate = truth + 0.5 * rng.standard_normal(220)  # the objective's value: noisy, but on the whole truth
    rows = np.column_stack([x, estimate])
    fit, rest = slice(0, 20), slice(20, None)
    follows = Surrogate(seed=0, line_column=60).fit(rows[fit], truth[fit])
    forest = Surrogate(seed=0).fit(rows[fit], truth[fit])
    assert follows.uses_line and not forest.uses_line
    held_out = {name: kendalltau(model.predict(rows[rest])[0], truth[rest]).statistic
                for name, model in (("line", follows), ("forest", forest))}
    assert held_out["line"] > held_out["forest"] + 0.1
    assert follows.held_out_tau() > forest.held_out_tau()  # what the run reports says the same
    mean, spread = follows.predict(rows[:5])
    assert (spread > 0).all()  # the forest on what the line leaves still gives the choice an uncertainty

    # an estimate that knows nothing of the result: the forest on the columns that do is kept
    learnable = 3 * x[:, 0]
    noise = np.column_stack([x, rng.random(220)])
    assert not Surrogate(seed=0, line_column=60).fit(noise[:40], learnable[:40]).uses_line
    # a value the zero-cost stage did not record (NaN) is read as the mean of the others
    rows[3, 60] = np.nan
    assert np.isfinite(Surrogate(seed=0, line_column=60).fit(rows[fit], truth[fit]).predict(rows[:5])[0]).all()


def test_a_proxy_search_picks_by_the_known_data_free_part_once_it_has_results():
    """When each score is exactly its data-free part (no zero-cost part to learn), every pick after the uniform
    ones is the free screened genome with the highest data-free part: the surrogate adds nothing unknown."""
    from nas.io import parse_genome
    from nas.search.params import genome_data, trial_picker

    pool = screen(TINY, 300, seed=0, within_budget=everything)
    sampler = CascadeSampler(pool, TINY, seed=0, first_picks=6)  # the zero-cost stage: a proxy search's
    study = optuna.create_study(direction="maximize", sampler=sampler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        genome = parse_genome(genome_data(TINY, trial_picker(trial)))
        at = pool.index[genome.content_hash()]
        cost = pool.costs[at]
        for key, value in (("genome_hash", genome.content_hash()), ("params", cost[0]), ("flops", cost[1]),
                           ("structural", pool.structural[at]), ("data_free", pool.data_free[at])):
            trial.set_user_attr(key, value)
        return pool.data_free[at]

    study.optimize(objective, n_trials=14)
    uniform = {t.user_attrs["genome_hash"] for t in study.trials if t.user_attrs["picked_by"] == "uniform"}
    learned = [t.user_attrs["genome_hash"] for t in study.trials if t.user_attrs["picked_by"] == "surrogate"]
    best_first = [h for _, h in sorted(zip(pool.data_free, pool.hashes), reverse=True) if h not in uniform]
    assert len(uniform) == 6 and learned == best_first[:8]
    assert stage_results(Encoder(choices(TINY)), study.trials, "zero-cost")[1].shape == (14,)


def test_a_pick_without_new_results_reuses_the_surrogate_and_picks_as_a_refit_would(monkeypatch):
    """Between two results (here a pruned trial leaves none) the sampler picks with the surrogate it fitted
    last, whose predictions over the pool it keeps: the picks are those of a sampler that refits every time."""
    from nas.io import parse_genome
    from nas.search import cascade
    from nas.search.params import genome_data, trial_picker

    pool = screen(TINY, 300, seed=0, within_budget=everything)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fits = []
    fit = cascade.Surrogate.fit
    monkeypatch.setattr(cascade.Surrogate, "fit", lambda self, *a, **k: fits.append(1) or fit(self, *a, **k))

    class Refitting(CascadeSampler):
        def _surrogate(self, *args):
            self._fitted = None
            return super()._surrogate(*args)

    def picks(sampler: CascadeSampler) -> tuple[list[str], int]:
        fits.clear()
        study = optuna.create_study(direction="maximize", sampler=sampler)

        def objective(trial: optuna.Trial) -> float:
            genome = parse_genome(genome_data(TINY, trial_picker(trial)))
            at = pool.index[genome.content_hash()]
            for key, value in (("genome_hash", genome.content_hash()), ("params", pool.costs[at][0]),
                               ("flops", pool.costs[at][1]), ("structural", pool.structural[at])):
                trial.set_user_attr(key, value)
            if trial.number % 3 == 2:
                raise optuna.TrialPruned()
            return pool.data_free[at]

        study.optimize(objective, n_trials=15)
        return [t.user_attrs["genome_hash"] for t in study.trials], len(fits)

    kept, kept_fits = picks(CascadeSampler(pool, TINY, seed=0, first_picks=4))
    refitted, refits = picks(Refitting(pool, TINY, seed=0, first_picks=4))
    assert kept == refitted
    assert kept_fits < refits


def test_the_cascade_sampler_picks_new_genomes_and_better_ones_once_it_has_learned():
    """A real Optuna study over the tiny space: uniform picks first, then the surrogate's, which score higher."""
    from nas.io import parse_genome
    from nas.search.params import genome_data, trial_picker

    pool = screen(TINY, 600, seed=0, within_budget=everything)
    sampler = CascadeSampler(pool, TINY, seed=0, first_picks=6)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        genome = parse_genome(genome_data(TINY, trial_picker(trial)))
        cost = analytic_cost(genome)
        trial.set_user_attr("genome_hash", genome.content_hash())
        for key, value in (("params", cost.params), ("flops", cost.flops),
                           ("structural", pool.structural[pool.index[genome.content_hash()]])):
            trial.set_user_attr(key, value)
        return total_width(genome, None)

    study.optimize(objective, n_trials=22)
    trials = study.trials
    hashes = [t.user_attrs["genome_hash"] for t in trials]
    assert len(set(hashes)) == len(hashes) and set(hashes) <= set(pool.hashes)  # from the pool, never twice
    uniform = [t.value for t in trials if t.user_attrs["picked_by"] == "uniform"]
    learned = [t for t in trials if t.user_attrs["picked_by"] == "surrogate"]
    assert len(uniform) == 6 and len(learned) == 16
    assert all({"predicted", "spread", "surrogate_results", "surrogate_tau", "surrogate_interval"} <= set(t.user_attrs)
               for t in learned)
    low, high = learned[-1].user_attrs["surrogate_interval"]
    assert low <= learned[-1].user_attrs["surrogate_tau"] <= high
    everything_in_pool = [sum(w for w in _widths(p)) for p in pool.params]
    assert np.median([t.value for t in learned]) > np.percentile(everything_in_pool, 75)
    assert np.median([t.value for t in learned]) > np.median(uniform)
    assert learned[-1].user_attrs["surrogate_tau"] > 0.3


def _widths(params: dict) -> list[float]:
    """total_width from a genome's Optuna params (widths times depths per stage)."""
    return [float(params[f"stages[{i}].width"]) * float(params[f"stages[{i}].depth"]) for i in range(3)]


def test_a_default_search_screens_tags_its_trials_and_reports_the_cascade(tmp_path: Path):
    out = tmp_path / "run"
    result = nas.search("tiny", trials=12, screen=500, second="params", evaluate=total_width, out=out,
                        references="none", quiet=True)
    options, _ = read_run(out)
    assert options.sampler == "cascade"
    study = open_study(out, options)
    assert study.user_attrs[SCREEN_ATTR]["drawn"] == 500
    trials = study.get_trials(deepcopy=False)
    assert {t.user_attrs["stage"] for t in trials} == {"custom"}
    assert sum(t.user_attrs.get("picked_by") == "surrogate" for t in trials) >= 4
    report = (out / "report.md").read_text()
    assert "## Cascade" in report and "500 drawn" in report and "held-out Kendall tau over the 12 results" in report
    assert "95% bootstrap interval" in report
    assert result.best is not None

    # Resumed with more trials: the same pool (from the cache), and no genome evaluated twice.
    nas.search(resume=out, trials=18, evaluate=total_width, quiet=True)
    trials = open_study(out, options).get_trials(deepcopy=False)
    evaluated = [t.user_attrs["genome_hash"] for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(trials) >= 18 and len(set(evaluated)) == len(evaluated)


def test_a_screen_of_no_genomes_is_refused_before_anything_is_written(tmp_path: Path):
    with pytest.raises(InputError, match="--screen must be at least 1, got 0"):
        nas.search("tiny", screen=0, out=tmp_path / "never", quiet=True)
    assert not (tmp_path / "never").exists()


def test_the_screen_draws_what_sample_genomes_draws_for_a_seed():
    """The screen's draws are the space's uniform draws, so a corpus genome is a screened genome."""
    from nas.space import sample_genomes

    pool = screen(TINY, 50, seed=0, within_budget=everything)
    expected = [g.content_hash() for g in sample_genomes(TINY, 5, seed=0)]
    assert pool.hashes[:5] == expected


def test_a_training_cascade_promotes_the_best_third_to_longer_training(tmp_path: Path):
    """``--objective train``: genomes picked by the surrogate train the first --epochs of a --long-epochs
    schedule; one whose result ranks in the top third so far (``--reduction-factor 3``) trains on from its
    checkpoint to --long-epochs, as a trial of its own stage, never as a duplicate."""
    out = tmp_path / "run"
    nas.search("tiny", objective="train", data="digits", data_limit=100, epochs=1, long_epochs=2, trials=9,
               reduction_factor=3, screen=200, references="none", out=out, quiet=True)
    options, _ = read_run(out)
    trials = [t for t in open_study(out, options).get_trials(deepcopy=False)
              if t.state == optuna.trial.TrialState.COMPLETE]
    long = [t for t in trials if t.user_attrs["stage"] == "train-long"]
    short = {t.number: t for t in trials if t.user_attrs["stage"] == "train"}
    assert long and short
    # The zero-cost stage scored each first stage's genome; a promotion reads that score beside the accuracy.
    _, scored = zero_cost_features(trials)
    for t in long:
        first = short[t.user_attrs["promoted_from"]]
        assert t.user_attrs["genome_hash"] == first.user_attrs["genome_hash"] and "duplicate_of" not in t.user_attrs
        assert "accuracy_epoch_2" in t.user_attrs and "accuracy_epoch_2" not in first.user_attrs
        assert first.user_attrs["schedule_epochs"] == 2  # its first epoch was the long schedule's first
        assert t.user_attrs["accuracy_epoch_1"] == first.values[0]  # trained on from there, not afresh
        assert t.user_attrs[RANKED_WITH_OBJECTIVE]
        earlier = {s.number: s.values[0] for s in short.values() if s.number < t.number}
        objective = {n: scored[short[n].user_attrs["genome_hash"]][0] for n in earlier
                     if short[n].user_attrs["genome_hash"] in scored}
        assert first_rung_order(earlier, objective).index(first.number) < max(1, len(earlier) // 3)
    assert len({t.user_attrs["genome_hash"] for t in long}) == len(long)  # each promoted once
    # A promotion ends its schedule and drops its checkpoint; the others wait for a later promotion (--resume).
    left = {f.name.split("-")[0] for f in (out / "checkpoints").glob("*.pt")}
    assert left == {t.user_attrs["genome_hash"] for t in short.values()} - {t.user_attrs["genome_hash"] for t in long}
    report = (out / "report.md").read_text()
    assert "| train-long (built, scored) |" in report
    assert f"{len(long)} promotions from the first stage were chosen by the mean of two ranks" in report


def test_by_default_only_the_top_fifth_is_promoted(tmp_path: Path):
    """The default ``--reduction-factor 5``: a first stage trains on only once it ranks in the top fifth of those
    so far, so 7 trainings are 6 first stages and 1 promotion, made once 5 first stages are in (floor(5 / 5))."""
    out = tmp_path / "run"
    nas.search("tiny", objective="train", data="digits", data_limit=100, epochs=1, long_epochs=2, trials=7,
               shortlist=0, screen=200, references="none", out=out, quiet=True)
    options, _ = read_run(out)
    assert options.reduction_factor == 5
    trials = sorted((t for t in open_study(out, options).get_trials(deepcopy=False)
                     if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number)
    assert [t.user_attrs["stage"] for t in trials] == ["train"] * 5 + ["train-long", "train"]
    promoted = trials[5]
    first = {t.number: t.values[0] for t in trials[:5]}
    assert first[promoted.user_attrs["promoted_from"]] == max(first.values())  # the best of five, no objective


def test_promotion_from_the_first_rung_reads_the_accuracy_beside_the_objective():
    """A mean of the two ranks: a genome fourth by accuracy and first by the objective passes one second by
    accuracy and last by the objective; where they tie, the accuracy decides; a genome the zero-cost stage did
    not score reads the median rank."""
    accuracy = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5}
    assert first_rung_order(accuracy) == ["a", "b", "c", "d", "e"]  # no objective: the accuracy alone
    objective = {"a": 2.0, "b": 1.0, "c": 3.0, "d": 5.0, "e": 4.0}
    # mean ranks (5 best): a (5 + 2) / 2, b (4 + 1) / 2, c 3, d (2 + 5) / 2, e (1 + 4) / 2
    assert first_rung_order(accuracy, objective) == ["a", "d", "c", "b", "e"]
    assert first_rung_order(accuracy, objective, weight=0.0) == ["a", "b", "c", "d", "e"]
    assert first_rung_order(accuracy, {k: -v for k, v in accuracy.items()}) == ["a", "b", "c", "d", "e"]  # ties
    # b unscored reads rank 3; the four scored spread over ranks 1 to 5: a 1, c 2.33, e 3.67, d 5
    unscored = {k: v for k, v in objective.items() if k != "b"}
    assert first_rung_order(accuracy, unscored) == ["b", "d", "a", "c", "e"]


def test_a_training_cascade_promotes_through_a_middle_rung(tmp_path: Path):
    """``--rungs auto`` doubles --epochs below --long-epochs: 1, then 2, then 4 epochs of one 4-epoch schedule.
    A genome reaches each rung by ranking in the top third of those at the rung below (``--reduction-factor 3``),
    trains on from where it stopped, and is a trial of each rung's stage once; the surrogate reads every rung's
    results."""
    out = tmp_path / "run"
    # 13 trainings: 9 first stages, the top third of them (3) at epoch 2, the top third of those (1) at 4
    nas.search("tiny", objective="train", data="digits", data_limit=100, epochs=1, long_epochs=4, rungs="auto",
               reduction_factor=3, trials=13, shortlist=0, screen=200, references="none", out=out, quiet=True)
    options, space = read_run(out)
    assert options.promotion_rungs == (2, 4)
    trials = [t for t in open_study(out, options).get_trials(deepcopy=False)
              if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    by_number = {t.number: t for t in trials}
    at = {stage: [t for t in trials if t.user_attrs["stage"] == stage] for stage in ("train", "train-epoch-2",
                                                                                      "train-long")}
    assert [len(at[stage]) for stage in at] == [9, 3, 1]
    for stage, below, epochs in (("train-epoch-2", "train", 2), ("train-long", "train-epoch-2", 4)):
        for t in at[stage]:
            source = by_number[t.user_attrs["promoted_from"]]
            assert source.user_attrs["stage"] == below
            assert source.user_attrs["genome_hash"] == t.user_attrs["genome_hash"]
            assert f"accuracy_epoch_{epochs}" in t.user_attrs and f"accuracy_epoch_{epochs}" not in source.user_attrs
            assert t.user_attrs[f"accuracy_epoch_{epochs // 2}"] == source.values[0]  # trained on, not afresh
            earlier = [s.values[0] for s in at[below] if s.number < t.number]
            assert sorted(earlier, reverse=True).index(source.values[0]) < len(earlier) // 3
        assert len({t.user_attrs["genome_hash"] for t in at[stage]}) == len(at[stage])
    # Fitted across rungs: a genome that reached the long schedule is read at its long accuracy.
    x, y = stage_results(Encoder(choices(space)), trials, "train")
    long = {t.user_attrs["genome_hash"]: t.values[0] for t in at["train-long"]}
    first = [t.user_attrs["genome_hash"] for t in at["train"]]
    assert len(y) == 9 and all(y[first.index(h)] == value for h, value in long.items())
    report = (out / "report.md").read_text()
    assert "| train-epoch-2 (built, scored) |" in report and "| train-long (built, scored) |" in report
    assert "A result is read at the long schedule's end where the genome was promoted there" in report


def test_rung_targets_shift_each_rung_by_its_median_gain_to_the_top():
    levels = [{"a": 0.5, "b": 0.4, "c": 0.2, "d": 0.1}, {"a": 0.7, "b": 0.5}, {"a": 0.9}]
    # d and c reached only the first stage: + (0.9 - 0.5); b the middle rung: + (0.9 - 0.7); a the top
    assert rung_targets(levels) == pytest.approx({"a": 0.9, "b": 0.7, "c": 0.6, "d": 0.5})
    assert rung_targets([{"a": 0.5}, {}, {}]) == {"a": 0.5}  # nobody promoted yet: the first stage as it is


def test_a_training_cascade_scores_genomes_zero_cost_before_training_them(tmp_path: Path, capsys):
    """With a zero-cost stage (``--shortlist``), each training is picked among genomes already scored zero-cost
    on a batch of the data; those scoring trials are tagged, never counted toward --trials, and never the
    winner, and the training surrogate reads their scores."""
    out = tmp_path / "run"
    result = nas.search("tiny", objective="train", data="digits", data_limit=100, epochs=1, long_epochs=0,
                        pruner="none", trials=9, shortlist=4, screen=200, references="none", out=out)
    said = capsys.readouterr().err
    assert said.count("expected run time") == 1  # from the first training, not again at each zero-cost score
    options, space = read_run(out)
    trials = open_study(out, options).get_trials(deepcopy=False)
    scoring = [t for t in trials if t.user_attrs.get("stage") == "zero-cost"]
    training = [t for t in trials if t.user_attrs.get("stage") == "train" and "duplicate_of" not in t.user_attrs]
    assert len(training) == 9 == result.counts["trials"]
    assert result.counts["zero_cost"] == len(scoring) >= 8
    # Scored on the data's images, by the tiny space's --data twin of the objective: all six zero-cost scores.
    assert options.objective_fit == "tiny.data"
    assert all(t.user_attrs["screening"] and set(t.user_attrs["scores"]) >= objective_scores("tiny.data")
               for t in scoring)
    scored_at = {t.user_attrs["genome_hash"]: t.number for t in scoring}
    assert len(scored_at) == len(scoring)  # no genome scored twice
    assert len({t.user_attrs["genome_hash"] for t in training}) == len(training)  # nor trained twice
    for t in training[1:]:  # each training among genomes scored before it was picked (but the first: the
        assert scored_at[t.user_attrs["genome_hash"]] < t.number  # median-cost genome the start line times)
    assert training[0].user_attrs["calibration"]
    assert any(t.user_attrs.get("picked_by") == "surrogate" for t in training)
    x, y = stage_results(Encoder(choices(space)), trials, "train", zero_cost_features(trials))
    assert x.shape == (len(training), len(Encoder(choices(space)).columns) + len(ZERO_COST_FEATURES))
    assert np.isfinite(x[1:, -len(ZERO_COST_FEATURES):]).all()  # every training but the first was scored
    assert y.tolist() == [t.values[0] for t in training if t.state == optuna.trial.TrialState.COMPLETE]
    best = max((t for t in training if t.values), key=lambda t: t.values[0])
    assert result.best.number == best.number  # the winner is the best training, not a zero-cost score
    report = (out / "report.md").read_text()
    assert "| zero-cost (built, scored, ahead of training) |" in report
    assert f"{len(scoring)} genomes scored zero-cost ahead of training (not counted)" in report
    assert "choices, data-free costs and zero-cost scores" in report
    assert f"- zero-cost stage: fit `tiny.data.json` ({objective_identity('tiny.data')['digest']})" in report
    # beside the surrogate's held-out tau, what the zero-cost features rank the same results at unfitted
    single = surrogate_summary(space, trials, "train")["single_taus"]
    assert single and set(single) <= set(ZERO_COST_FEATURES) and all(-1 <= t <= 1 for t in single.values())
    unfitted = kendalltau(x[1:, -len(ZERO_COST_FEATURES)], y[1:]).statistic  # the objective's value, "score"
    assert single["score"] == pytest.approx(unfitted)
    assert f"the objective's value ranks them at {single['score']:+.2f}" in report
    # the training surrogate may follow the objective's value through a line; each pick and the report say which
    learned = [t for t in training if t.user_attrs.get("picked_by") == "surrogate"]
    assert all(isinstance(t.user_attrs["surrogate_line"], bool) for t in learned)
    follows = surrogate_summary(space, trials, "train")["follows_objective"]
    assert ("a line in the objective's value plus a forest" in report) is follows


def test_the_zero_cost_short_list_grows_with_the_trainings(tmp_path: Path):
    """``--shortlist-growth G``: each training is picked among the ``--shortlist`` genomes scored ahead of it and G
    more per training made before it, so that as the run learns, it chooses among more."""
    out = tmp_path / "run"
    nas.search("tiny", objective="train", data="digits", data_limit=100, epochs=1, long_epochs=0, pruner="none",
               trials=5, shortlist=2, shortlist_growth=3, screen=200, references="none", out=out, quiet=True)
    options, _ = read_run(out)
    assert options.shortlist_growth == 3
    trials = open_study(out, options).get_trials(deepcopy=False)
    scored, trained, waiting_at = set(), [], []
    for t in sorted(trials, key=lambda t: t.number):
        if t.user_attrs.get("stage") == "zero-cost":
            scored.add(t.user_attrs["genome_hash"])
        elif t.user_attrs.get("stage") == "train" and "duplicate_of" not in t.user_attrs:
            if not t.user_attrs.get("calibration"):
                waiting_at.append((len(trained), len(scored - set(trained))))
            trained.append(t.user_attrs["genome_hash"])
    assert len(trained) == 5
    assert [waiting for _, waiting in waiting_at] == [2 + 3 * before for before, _ in waiting_at]


def test_a_resumed_training_cascade_scores_no_genome_twice_and_trains_only_scored_ones(tmp_path: Path):
    """The zero-cost stage keeps nothing outside the study: a resumed run (or a worker) picks up its scores,
    scores no genome again and trains among what was scored before."""
    out = tmp_path / "run"
    nas.search("tiny", objective="train", data="digits", data_limit=100, epochs=1, long_epochs=2, trials=3,
               shortlist=3, screen=200, references="none", out=out, quiet=True)
    options, _ = read_run(out)

    def scored() -> list[str]:
        trials = open_study(out, options).get_trials(deepcopy=False)
        return [t.user_attrs["genome_hash"] for t in trials if t.user_attrs.get("stage") == "zero-cost"]

    before = scored()
    result = nas.search(resume=out, trials=6, quiet=True)
    assert result.counts["trials"] == 6
    trials = open_study(out, options).get_trials(deepcopy=False)
    after = scored()
    assert after[:len(before)] == before and len(after) > len(before)  # kept, and more scored on resume
    assert len(after) == len(set(after))
    first = [t for t in trials if t.user_attrs.get("stage") == "train" and not t.user_attrs.get("calibration")]
    assert first and all(t.user_attrs["genome_hash"] in after for t in first)
