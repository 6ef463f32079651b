"""Training memory: the estimate's parts, each block type's rule against what autograd actually keeps, the
estimate against a real training peak, and ``--batch-size auto``."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

import nas.memory
from blocks import CONFIGS
from blocks.base import create
from nas.cli import main
from nas.cost.profile import with_resolution
from nas.errors import InputError
from nas.graph import build_graph
from nas.io import load_genome
from nas.memory import HEAP_FACTOR, choose_batch, training_memory_estimate
from nas.saved_activations import RULES, network_saved_tensors, saved_elements
from nas.search import SearchOptions
from nas.search.scoring import search_inputs, training_batch
from nas.supernet import SupernetTrainOptions
from tests.conftest import HYBRID_YAML, ROOT, run_nas


def _hybrid(classes: int = 4):
    raw = yaml.safe_load(HYBRID_YAML)
    return load_genome({**raw, "num_classes": classes})


def _kept_by_autograd(module: torch.nn.Module, make_input, batch: int) -> int:
    """What autograd saves for backward in one forward, in float32 elements (bytes / 4, as the rules count an
    int64 index or a complex value), each storage once, weights aside."""
    weights = {p.untyped_storage()._cdata for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in weights:
            seen[key] = t.untyped_storage().nbytes() // 4
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(make_input(batch))
    return sum(seen.values())


def _per_image(module: torch.nn.Module, make_input) -> float:
    """Saved elements per image: the difference between batches 4 and 2 leaves out what does not grow with
    the batch (index buffers, BatchNorm statistics)."""
    return (_kept_by_autograd(module, make_input, 4) - _kept_by_autograd(module, make_input, 2)) / 2


def _block_cases():
    """Every registered type's default and examples, with a small shape it accepts."""
    shapes = [(64, 8, 8), (32, 16, 16), (48, 28, 28), (96, 14, 14)]
    for role in ("norm", "mlp", "mixer", "block", "downsample", "stem", "head"):
        for tag, cls in sorted(CONFIGS[role].items()):
            examples = list(cls.examples)
            try:
                cls()
                examples.insert(0, {})
            except ValueError:
                pass
            for example in [e for i, e in enumerate(examples) if e not in examples[:i]]:
                cfg = cls(**example)
                for shape in shapes:
                    out = {"downsample": 2 * shape[0], "stem": 32, "head": 10}.get(role, shape[0])
                    shape = (3, 4 * shape[1], 4 * shape[2]) if role == "stem" else shape
                    try:
                        cfg.check(shape, out)
                        cfg.out_shape(shape, out)
                    except ValueError:
                        continue
                    yield pytest.param(role, cfg, shape, out, id=f"{role}-{tag}-{example}")
                    break


@pytest.mark.parametrize(("role", "cfg", "shape", "out"), list(_block_cases()))
def test_each_rule_counts_what_autograd_keeps(role, cfg, shape, out):
    assert cfg.type in RULES, f"{cfg.type}: no rule in nas/saved_activations.py"
    c, h, w = shape
    torch.manual_seed(0)
    module = create(role, cfg.model_dump(), dim=c, in_chs=c, out_chs=out, size=(h, w), num_classes=out).train()
    kept = _per_image(module, lambda batch: torch.randn(batch, h, w, c, requires_grad=True))
    rule = saved_elements(cfg, shape, out)
    # within 5%, or within 2% of the input map where a head keeps only pooled vectors
    assert abs(rule - kept) <= max(0.05 * kept, 0.02 * c * h * w), (rule, kept)


def test_a_network_keeps_the_sum_of_its_blocks_each_tensor_once():
    # each bottleneck's last ReLU keeps its output, which is the next block's input: one tensor, not two
    genome = with_resolution(load_genome("zoo:resnet50"), 64)
    nodes = [d for _, d in build_graph(genome).nodes(data=True) if d["role"] != "input"]
    rule = sum(network_saved_tensors([(d["config"], d["in_shape"], d["out"]) for d in nodes]))
    model = nas.compile_model(genome)
    c, (h, w) = genome.input.channels, genome.input.resolution
    kept = _per_image(model.train(), lambda batch: torch.randn(batch, c, h, w))
    assert rule == pytest.approx(kept, rel=0.01)


def test_the_parts_add_up_and_activations_grow_with_the_batch(monkeypatch):
    genome = _hybrid()
    small, large = training_memory_estimate(genome, 8), training_memory_estimate(genome, 16)
    for m in (small, large):
        assert m.total == m.weights + m.gradients + m.optimizer + m.activations + m.allocator + m.validation
        assert m.optimizer == 2 * m.gradients  # AdamW's two moments
    assert large.activations == 2 * small.activations
    assert (large.weights, large.gradients, large.optimizer) == (small.weights, small.gradients, small.optimizer)
    # the CPU heap's share: between none and HEAP_FACTOR - 1 of the activations; none on CUDA
    assert 0 < small.allocator <= (HEAP_FACTOR - 1) * small.activations + 1
    assert training_memory_estimate(genome, 8, device="cuda").allocator == 0
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # glibc maps every tensor over 64 KiB: no heap share
    assert training_memory_estimate(genome, 8).allocator < small.allocator / 10
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    half = training_memory_estimate(genome, 8, device="cuda", dtype="bfloat16")
    assert half.activations * 2 == small.activations and half.weights == small.weights
    assert training_memory_estimate(genome, 8, optimizer="sgd").optimizer == small.gradients
    with_validation = training_memory_estimate(genome, 8, validation_batch=256)
    assert with_validation.total - small.total == with_validation.validation > 0
    assert "at batch 8" in small.describe() and "validation" in with_validation.describe()


def test_frozen_weights_take_no_gradient_and_a_supernet_trains_all_it_shares():
    randformer = load_genome("zoo:randformer_s12")  # its mixing matrices are frozen
    m = training_memory_estimate(randformer, 1)
    assert m.gradients < m.weights
    shared = training_memory_estimate(randformer, 1, trained_params=10**8)
    assert shared.weights == shared.gradients == 4 * 10**8 and shared.optimizer == 8 * 10**8


def test_the_heap_share_is_at_most_what_the_forward_pass_frees_again():
    """A conv-BN network keeps nearly every tensor its forward pass makes, so glibc's heap holds little beyond
    them; a MetaFormer's norms, MLPs and attention free more, and the heap share reaches its HEAP_FACTOR bound."""
    from nas.memory import forward_bytes

    conv_bn = with_resolution(load_genome("zoo:mobilenetv2_100"), 96)
    one, more = forward_bytes(conv_bn)  # counted on the meta device: at batch 1, and per further image
    assert 0 < more < one and forward_bytes(conv_bn) == (one, more)
    lean, metaformer = training_memory_estimate(conv_bn, 16), training_memory_estimate(_hybrid(), 16)
    assert lean.allocator < 0.2 * lean.activations
    assert metaformer.allocator == pytest.approx((HEAP_FACTOR - 1) * metaformer.activations, rel=0.1)


@pytest.mark.parametrize(("name", "batch"), [("hybrid", 32), ("mobilenetv2_100 at 96 px", 16)])
def test_the_estimate_is_near_a_real_training_peak(name, batch):
    # the benchmark's own child process: 2 AdamW steps and a validation pass, peak RSS over its baseline
    genome = _hybrid() if name == "hybrid" else with_resolution(load_genome("zoo:mobilenetv2_100"), 96)
    estimate = training_memory_estimate(genome, batch, validation_batch=batch)
    done = subprocess.run([sys.executable, ROOT / "benchmarks" / "train_memory.py", "--child",
                           json.dumps(genome.to_dict()), "--batch", str(batch), "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])["measured"]
    assert estimate.total == pytest.approx(measured, rel=0.25), (estimate.describe(), measured)


def test_auto_picks_a_smaller_batch_when_less_memory_is_free(monkeypatch):
    genome = _hybrid()

    def estimate(batch):
        return training_memory_estimate(genome, batch)

    roomy = choose_batch(estimate, "cpu", free=10**11)
    assert roomy.batch == 256  # the cap
    free = estimate(64).total / nas.memory.MEMORY_SHARE + 1
    tight = choose_batch(estimate, "cpu", free=free)
    assert tight.batch == 64 and tight.memory.total <= nas.memory.MEMORY_SHARE * free
    shared = choose_batch(estimate, "cpu", free=free, processes=2)  # two processes share the memory
    assert shared.batch < 64 and estimate(2 * shared.batch).total > nas.memory.MEMORY_SHARE * free / 2
    assert choose_batch(estimate, "cpu", free=10**11, most=40).batch == 32  # not past the data set
    assert "batch 64 (auto: " in tight.describe() and "GB free)" in tight.describe()
    # a search's trials take the batch chosen for its largest genome
    monkeypatch.setattr(nas.memory, "free_memory", lambda device: free)
    options = SearchOptions(objective="train", data="synthetic", data_limit=300, batch_size="auto")
    inputs, _ = search_inputs(genome.to_dict(), options)
    chosen, line = training_batch(options, genome, inputs.dataset, "cpu", "this genome")
    assert chosen.batch_size < 64 and f"batch {chosen.batch_size} (auto: " in line  # validation needs room too
    assert SupernetTrainOptions(batch_size="auto").check().batch_size == "auto"


def test_a_batch_larger_than_the_data_set_is_counted_as_the_batch_training_takes():
    genome = _hybrid()
    options = SearchOptions(objective="train", data="synthetic", data_limit=20, batch_size=64)
    inputs, _ = search_inputs(genome.to_dict(), options)
    images = len(inputs.dataset.train_y)
    assert images < 64  # train_model trains on batches of min(64, images)
    _, line = training_batch(options, genome, inputs.dataset, "cpu", "this genome")
    assert f"at batch {images} " in line and "at batch 64" not in line


def test_nothing_fits_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    with pytest.raises(InputError, match="even at batch 1"):
        choose_batch(lambda batch: training_memory_estimate(_hybrid(), batch), "cpu", free=10**5)
    genome = tmp_path / "g.yaml"
    genome.write_text(HYBRID_YAML)
    monkeypatch.setattr(nas.memory, "free_memory", lambda device: 10**5)
    code = main(["score", str(genome), "--objective", "train", "--data", "synthetic", "--data-limit", "16",
                 "--batch-size", "auto"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "even at batch 1" in err[0] and err[0].startswith("error:")


def test_the_command_line_states_the_memory_and_the_batch_it_chose(tmp_path):
    genome = tmp_path / "g.yaml"
    genome.write_text(HYBRID_YAML)
    done = run_nas("score", genome, "--objective", "train", "--data", "synthetic", "--data-limit", "16",
                   "--epochs", "1", "--batch-size", "auto", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert "training memory ~" in done.stderr and "batch 16 (auto: " in done.stderr  # capped by the 16 images
