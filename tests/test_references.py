"""Published architectures as reference points in every run: picked from the zoo for the run's input and budget
(or named with --references), scored as a trial is, cached in references.json and shown beside the winner."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

import nas
from nas.cost import analytic_cost
from nas.errors import InputError
from nas.search import SearchOptions, write_report
from nas.search import references as refs_module
from nas.search.options import MOST_REFERENCES
from nas.search.references import pick_references
from nas.space import read_space
from tests.conftest import run_nas
from tests.test_search import SMALL_SPACE, score_by_width

TINY = read_space("tiny")[0]  # 32x32 input, 10 classes; its genomes reach 25 MFLOPs
# A search that finishes in seconds: proxy objective, FLOPs as the second objective (no latency timing).
FAST = ["--space", "tiny", "--second", "flops", "--sampler", "random", "--latency-repeats", "1",
        "--proxy-batch", "4"]


def tiny_options(**values) -> SearchOptions:
    return SearchOptions(space="tiny", **values).check()


# --- picking ------------------------------------------------------------------------------------------------------

def test_auto_picks_the_zoo_genomes_that_fit_the_budget_at_the_runs_input():
    picked = pick_references(TINY, tiny_options(budget="40MFLOPs", trials=40))
    # at 32 px: MobileNetV2 (6.4 MFLOPs), MogaNet-T (22) and the three S12 MetaFormers (37 MFLOPs) fit;
    # ConvNeXt-T (91) does not. At most 4: the one farthest from the space's reach (21.7 MFLOPs) is left out
    assert {ref.source for ref in picked.references} == {"zoo:moganet_t", "zoo:identityformer_s12",
                                                         "zoo:poolformerv2_s12", "zoo:randformer_s12"}
    assert "4 of the 5 zoo genomes" in picked.note
    for ref in picked.references:
        assert ref.genome.input.resolution == (32, 32) and ref.genome.num_classes == 10
        assert analytic_cost(ref.genome).flops <= 40e6
        assert ref.name == f"{ref.source.removeprefix('zoo:')} @32px"
    # nearest the most the space's genomes reach first: the 22 MFLOPs one before the 37 MFLOPs ones
    assert picked.references[0].source == "zoo:moganet_t"
    # windows of 7 do not divide a 32 px input's 8x8 maps, and SHViT's 16x stem leaves a 2x2 map, 1x1 after its
    # first downsample, too small for the second: those genomes are left out, and the note says so
    assert "Not valid at 32 px: davit_t, dinat_t, maxvit_t, shvit_s3, swin_t." in picked.note


def test_auto_falls_back_to_the_nearest_few_when_none_fits_and_scores_one_per_four_trials():
    below_all = pick_references(TINY, tiny_options(budget="3MFLOPs", trials=40))
    assert "no zoo genome fits the budget at 32 px" in below_all.note
    assert len(below_all.references) == 3 and below_all.references[0].source == "zoo:mobilenetv2_100"
    assert all(analytic_cost(ref.genome).flops > 3e6 for ref in below_all.references)

    no_budget = pick_references(TINY, tiny_options(budget="none", trials=100))
    assert len(no_budget.references) == MOST_REFERENCES
    assert len(pick_references(TINY, tiny_options(budget="none", trials=8)).references) == 2  # a quarter


def test_named_references_are_used_as_given_and_one_that_cannot_be_retargeted_says_why(tmp_path: Path):
    mine = tmp_path / "my_net.yaml"
    mine.write_text(yaml.safe_dump({**SMALL_SPACE, "stages": [
        {"depth": 1, "width": 16, "block": {"mixer": {"type": "pooling"}}}]}))
    picked = pick_references(TINY, tiny_options(references=["zoo:swin_t", mine, "zoo:convnext_t"]))  # or a,b,c
    assert [ref.name for ref in picked.references] == ["swin_t @32px", "my_net", "convnext_t @32px"]
    swin, own, convnext = picked.references
    assert swin.genome is None and "window 7 does not divide the 8x8 feature map" in swin.failure
    assert own.genome is not None and convnext.genome.input.resolution == (32, 32)


def test_a_file_name_that_holds_a_newline_is_shown_on_one_line(tmp_path: Path):
    # the name goes into the progress line, the report's table and its "behind X" sentence
    mine = tmp_path / "my\n## Winner: mine.yaml"
    mine.write_text(yaml.safe_dump({**SMALL_SPACE, "stages": [
        {"depth": 1, "width": 16, "block": {"mixer": {"type": "pooling"}}}]}))
    picked = pick_references(TINY, tiny_options(budget="40MFLOPs", trials=40, references=["auto", mine]))
    named = picked.references[-1]
    assert named.source == str(mine) and named.name == repr("my\n## Winner: mine")
    assert "\n" not in picked.note and picked.note.endswith(f"Named with --references: {named.name}.")


# --- bad input ----------------------------------------------------------------------------------------------------

def test_an_unknown_zoo_name_is_bad_input_in_one_line_naming_it(tmp_path: Path):
    done = run_nas("search", *FAST, "--references", "zoo:convnext_t,zoo:nope", "--out", tmp_path / "run")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "unknown zoo genome 'nope'" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_or_invalid_reference_file_is_bad_input_naming_it(tmp_path: Path):
    with pytest.raises(InputError, match=r"--references .*missing\.yaml: no such file"):
        nas.search("tiny", references=f"zoo:convnext_t,{tmp_path / 'missing.yaml'}", out=tmp_path / "a")
    with pytest.raises(InputError, match=r"did you mean 'zoo:convnext_t'"):
        nas.search("tiny", references="convnext_t", out=tmp_path / "b")
    broken = tmp_path / "broken.yaml"
    broken.write_text("stem: {type: conv, kernel: 4, stride: 4}\nstages: []\n")
    with pytest.raises(InputError, match=r"--references .*broken\.yaml.*stages"):
        nas.search("tiny", references=str(broken), out=tmp_path / "c")
    assert not any(tmp_path.glob("?/run.yaml"))


# --- a run -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_with_references(tmp_path_factory) -> tuple[Path, str]:
    """A real `nas search` with auto references: 8 trials, so two of them."""
    run_dir = tmp_path_factory.mktemp("refs") / "run"
    done = run_nas("search", *FAST, "--budget", "40MFLOPs", "--trials", "8", "--out", run_dir)
    assert done.returncode == 0, done.stderr
    return run_dir, done.stderr


def test_a_search_scores_its_references_and_reports_the_winner_against_them(run_with_references):
    run_dir, stderr = run_with_references
    assert "scoring 2 reference architectures as the trials are (proxy objective, device cpu)" in stderr
    assert "  identityformer_s12 @32px: score " in stderr and "references: the winner beats" in stderr
    stored = json.loads((run_dir / "references.json").read_text())
    # the two nearest in FLOPs to the run's reach: MogaNet-T (22 MFLOPs at 32 px), then the S12s (37) by name
    assert [entry["name"] for entry in stored["shown"]] == ["moganet_t @32px", "identityformer_s12 @32px"]
    report = (run_dir / "report.md").read_text()
    section = report.split("## Reference architectures")[1].split("## Parameter importances")[0]
    with (run_dir / "trials.csv").open() as f:
        winner = max(float(row["score"]) for row in csv.DictReader(f) if row["state"] == "feasible")
    for entry in stored["shown"]:
        score = stored["scores"][entry["key"]]["score"]
        row = next(line for line in section.splitlines() if line.startswith(f"| `{entry['name']}` | {score:.4g} |"))
        assert f"| {'yes' if winner > score else 'no'} ({winner - score:+.3g}) |" in row
    ahead = sum(stored["scores"][entry["key"]]["score"] >= winner for entry in stored["shown"])
    assert f"ranks {['1st', '2nd', '3rd'][ahead]} of 3 by score" in section


def test_report_and_resume_reuse_the_scores_and_never_recompute(run_with_references, tmp_path: Path,
                                                                monkeypatch):
    run_dir = Path(shutil.copytree(run_with_references[0], tmp_path / "run"))
    cache = run_dir / "references.json"
    before = cache.stat().st_mtime_ns, cache.read_text()
    report = run_nas("report", run_dir)
    assert report.returncode == 0, report.stderr
    assert "references: the winner beats" in report.stdout
    assert (cache.stat().st_mtime_ns, cache.read_text()) == before
    assert "identityformer_s12 @32px" in (run_dir / "report.md").read_text()

    def never(*args, **kwargs):
        raise AssertionError("a reference was scored again")

    monkeypatch.setattr(refs_module, "score_genome", never)
    result = nas.search(resume=run_dir, trials=9, quiet=True)
    assert [r.name for r in result.references] == ["moganet_t @32px", "identityformer_s12 @32px"]
    assert all(r.score is not None for r in result.references)
    assert (cache.stat().st_mtime_ns, cache.read_text()) == before


def test_a_run_whose_references_were_never_scored_says_how_to_score_them(run_with_references, tmp_path: Path):
    run_dir = Path(shutil.copytree(run_with_references[0], tmp_path / "run"))
    (run_dir / "references.json").unlink()  # a run from before references, or one stopped before them
    result = write_report(run_dir)
    assert result.references == []
    assert "Not scored yet: the run stopped before them; `nas search --resume RUN` scores them" in (
        run_dir / "report.md").read_text()


def test_references_none_scores_none(tmp_path: Path):
    seen = []

    def record(genome, model):
        seen.append(genome.name)
        return score_by_width(genome, model)

    result = nas.search(SMALL_SPACE, budget=None, trials=3, second="params", evaluate=record, references="none",
                        out=tmp_path / "run", quiet=True)
    assert result.references == [] and len(seen) == 3
    assert not (tmp_path / "run" / "references.json").exists()
    assert "Reference architectures" not in (tmp_path / "run" / "report.md").read_text()


def test_references_are_scored_by_the_runs_own_objective_and_a_failure_is_listed_not_raised(tmp_path: Path):
    seen = {}

    def record(genome, model):
        seen[genome.name] = (genome.input.resolution, genome.num_classes)
        if genome.name == "resnet50":
            raise RuntimeError("boom in the user's objective")
        return score_by_width(genome, model)

    result = nas.search(SMALL_SPACE, budget=None, trials=3, second="params", evaluate=record, out=tmp_path / "run",
                        references="zoo:mobilenetv2_100,zoo:swin_t,zoo:resnet50", quiet=True)
    mobilenet, swin, resnet = result.references
    assert seen["mobilenetv2_100"] == ((32, 32), 10)  # retargeted, then given to the run's evaluate
    assert mobilenet.score == score_by_width(_genome_named("mobilenetv2_100"), None)
    assert swin.score is None and "window 7 does not divide" in swin.failure and "swin_t" not in seen
    assert resnet.score is None and resnet.failure == "RuntimeError: boom in the user's objective"
    assert result.best is not None  # the run itself is whole
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| `resnet50 @32px` | failed: RuntimeError: boom in the user's objective |" in report


def _genome_named(name: str):
    from nas.io import load_genome
    from nas.search.references import retarget

    return retarget(load_genome(f"zoo:{name}"), SMALL_SPACE)


def test_ctrl_c_while_references_are_scored_still_leaves_the_report_of_the_trials(tmp_path: Path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(refs_module, "score_genome", interrupted)
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        nas.search(SMALL_SPACE, budget=None, trials=3, second="params", evaluate=score_by_width,
                   references="zoo:mobilenetv2_100", out=tmp_path / "run", stream=stream)
    assert "interrupted: the report for the 3 finished trials" in stream.getvalue()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| `mobilenetv2_100 @32px` | failed: not scored yet: the run stopped first" in report
    assert (tmp_path / "run" / "best.yaml").is_file()
