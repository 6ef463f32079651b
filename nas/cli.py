"""The ``nas`` command. Exit status: 0 ok, 2 bad input, 1 internal error."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn, get_args

import yaml

GENOME_HELP = "a genome YAML file, or zoo:NAME for a shipped architecture"


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are bad input like any other: one line, exit 2 (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _seed(text: str) -> int:
    """An argparse type: a seed, as every command takes one (``nas.flags.check_seed``)."""
    from nas.errors import InputError
    from nas.flags import check_seed

    seed = _at_least(0)(text)
    try:
        check_seed(seed)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--seed ")) from None
    return seed


def _at_least(minimum: int):
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "count"  # argparse names the type in its messages
    return parse


def _resolution(text: str) -> int | tuple[int, int]:
    """An argparse type: ``224`` (square) or ``800x1333`` (height x width)."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected a size like 224 or 800x1333 (height x width), got {text!r}")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


_resolution.__name__ = "resolution"  # argparse names the type in its messages


def _fmt_count(n: float) -> str:
    return f"{n / 1e6:.2f}M"


def _fmt_flops(n: float) -> str:
    return f"{n / 1e9:.3f}G"


def cmd_validate(args: argparse.Namespace) -> int:
    from nas.cost import analytic_cost
    from nas.errors import GenomeError, Problem
    from nas.graph import GRAPH_SUFFIXES, build_graph, write_graph
    from nas.io import file_read, parse_genome
    from nas.outputs import distinct_outputs, output_file
    from nas.space import check_space, is_space, read_space

    graph_out = output_file(args.graph, "--graph", GRAPH_SUFFIXES) if args.graph else None  # before any work
    distinct_outputs([("--graph", graph_out)], [("the file it validates", file_read(args.file))])
    data, text, label = read_space(args.file)
    if is_space(data):
        if args.graph:
            raise GenomeError(Problem("", "--graph needs a genome, not a space"), label)
        try:
            report = check_space(data, samples=args.samples, seed=args.seed)
        except GenomeError as err:
            raise err.located(label, text) from None
        print(f"ok: {label} is a space with {len(report.choices)} choices "
              f"({report.size:.3g} genomes); {report.valid}/{report.sampled} samples are valid genomes")
        if report.capped:
            print(f"  {report.forced} of its {report.options} options each forced into a sample; the rest only "
                  "as the random samples drew them")
        for problem, n in report.shape_problems[:5]:
            print(f"  skipped by the search in {n} samples: {problem}")
        return 0
    genome = parse_genome(data, label, text)
    cost = analytic_cost(genome)
    blocks = sum(s.depth for s in genome.stages)
    built = genome.built_blocks()
    within = f" ({built} built: a sequence builds each of its blocks)" if built != blocks else ""
    print(f"ok: {label}: genome {genome.name!r}, {len(genome.stages)} stages, {blocks} blocks{within}, "
          f"{_fmt_count(cost.params)} params, {_fmt_flops(cost.flops)} FLOPs, hash {genome.content_hash()}")
    if graph_out:
        write_graph(build_graph(genome), graph_out)
        print(f"graph written to {graph_out}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from nas.cost.profile import profile, resolve_device, with_resolution
    from nas.errors import printable
    from nas.io import load_genome

    genome = with_resolution(load_genome(args.genome), args.resolution)
    device = resolve_device(args.device)
    report = profile(genome, batch=args.batch, dtype=args.dtype, device=device, fvcore=args.fvcore,
                     latency=args.latency, threads=args.threads, repeats=args.repeats, table=args.table,
                     runtime=args.runtime)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{printable(report['name'])} (hash {report['hash']}): input {'x'.join(map(str, report['input']))}, "
          f"batch {report['batch']}, {report['dtype']}, {report['device']}")
    header = f"{'part':<14} {'blocks':>6} {'output':>12} {'params':>9} {'GFLOPs':>8}"
    header += f" {'fvcore':>8}" if args.fvcore else ""
    header += f" {'latency':>8}" if args.latency else ""
    print(header)
    last = [p for p in report["parts"] if not p["name"].startswith("neck")][-1]
    summary = [{"name": name, "blocks": None, "out_shape": [], **report[name]} for name in ("backbone", "neck")
               if name in report]  # a genome with a neck: backbone (stem and stages) and neck subtotals
    rows = report["parts"] + summary + [{"name": "total", "blocks": sum(p["blocks"] for p in report["parts"]),
                                         "out_shape": last["out_shape"], **report["total"],
                                         "latency_share": 1.0 if args.latency else None}]
    for row in rows:
        line = (f"{row['name']:<14} {row['blocks'] or '':>6} {'x'.join(map(str, row['out_shape'])):>12} "
                f"{_fmt_count(row['params']):>9} {row['flops'] / 1e9:>8.3f}")
        if args.fvcore:
            line += f" {row['fvcore_flops'] / 1e9:>8.3f}" if row.get("fvcore_flops") is not None else f" {'-':>8}"
        if args.latency:
            share = row.get("latency_share")
            line += f" {share:>8.1%}" if share is not None else f" {'-':>8}"
        print(line)
    if "neck" in report:
        shared = any(p["name"] == "neck.shared" for p in report["parts"])
        print("neck: each level's row is what computes that level"
              f"{'; neck.shared holds the weights every level uses' if shared else ''}"
              f"{'. --latency times the classifier forward, which does not run the neck' if args.latency else ''}")
    total = report["total"]
    if total["frozen_params"]:
        print(f"params include {_fmt_count(total['frozen_params'])} frozen")
    if args.fvcore:
        agreement = total["flops"] / total["fvcore_flops"] - 1 if total["fvcore_flops"] else float("nan")
        print(f"analytic vs fvcore: {agreement:+.3%}")
    print(f"peak inference memory (estimate: {report['memory']['method']}): "
          f"{report['memory']['peak_bytes'] / 2**20:.1f} MiB")
    if args.latency:
        lat = report["latency"]
        print(f"latency (measured end to end): median {lat['median_ms']:.2f} ms, p10 {lat['p10_ms']:.2f}, "
              f"p90 {lat['p90_ms']:.2f} over {lat['repeats']} runs; {lat['fingerprint_text']}")
        if lat["steal_warning"]:
            print(f"note: {lat['steal_warning']}", file=sys.stderr)
        print(f"latency share per part: from per-block timings summing to {lat['predicted_ms']:.2f} ms "
              f"({lat['table_measured']} newly timed, cached in {lat['table']})")
        if lat["calibrated_ms"] is not None:
            print(f"latency predicted by the table's calibration for this setup: {lat['calibrated_ms']:.2f} ms "
                  f"({lat['calibrated_ms'] / lat['median_ms'] - 1:+.1%} against the measurement)")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from nas.genome import Genome
    from nas.outputs import output_file, write_atomic

    out: Path | None = output_file(args.output, "-o") if args.output else None
    schema = Genome.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    text = json.dumps(schema, indent=2)
    if out:
        write_atomic(out, text + "\n")
    else:
        print(text)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    import torch

    from nas.compiler import compile_model
    from nas.errors import InputError, printable
    from nas.export import export_model
    from nas.io import file_read, load_genome
    from nas.outputs import distinct_outputs, output_file, replacing

    # every output checked before any work, so none is half written; -o alone by default, --onnx alone if asked
    out = output_file(args.output or "model.py", "-o") if args.output or not args.onnx else None
    onnx_out = output_file(args.onnx, "--onnx", (".onnx",)) if args.onnx else None
    weights = output_file(args.weights, "--weights") if args.weights else None
    distinct_outputs([("-o", out), ("--onnx", onnx_out), ("--weights", weights)],
                     [("the genome", file_read(args.genome))])
    if args.features_only and onnx_out:
        raise InputError("--features-only writes model.py only; --onnx exports the classifier")
    genome = load_genome(args.genome)
    state = compile_model(genome, seed=args.seed, features_only=args.features_only).state_dict() if weights else None
    if out:
        export_model(genome, out, features_only=args.features_only)
        what = ("the neck's pyramid" if genome.neck else "every stage's output") if args.features_only else None
        print(f"wrote {out} ({printable(genome.name)}, hash {genome.content_hash()}"
              f"{f'; build_model() returns {what}' if what else ''})")
    if onnx_out:
        from nas.onnx import export_onnx

        export_onnx(args.genome, onnx_out, seed=args.seed)  # the spec, so an error names it as given
        height, width = genome.input.resolution
        print(f"wrote {onnx_out}: ONNX of {printable(genome.name)} (seed {args.seed} weights), input "
              f"batchx{genome.input.channels}x{height}x{width} with a dynamic batch")
    if weights:
        with replacing(weights) as tmp:
            torch.save(state, tmp)
        print(f"wrote {weights}: initial weights (seed {args.seed}); load with build_model(weights=...)")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from nas.cost import analytic_cost
    from nas.errors import InputError
    from nas.io import dump_genome, load_genome, zoo_dir, zoo_names

    # An option of another action was accepted and ignored: `nas zoo list convnext_t` listed every genome.
    given = {"NAME": args.name, "--canonical": args.canonical, "--from": args.source, "-o": args.output}
    takes = {"list": (), "show": ("NAME", "--canonical"), "weights": ("NAME", "--from", "-o")}[args.action]
    stray = [what for what, value in given.items() if value not in (None, False) and what not in takes]
    if stray:
        raise InputError(f"nas zoo {args.action} takes no {stray[0]}"
                         + (f" (it is for nas zoo {'weights' if stray[0] in ('--from', '-o') else 'show'})"
                            if stray[0] != "NAME" else ""))
    if args.action == "weights":
        return _zoo_weights(args)
    if args.action == "show":
        if not args.name:
            raise InputError("nas zoo show needs a NAME; see nas zoo list")
        genome = load_genome(f"zoo:{args.name}")
        print(dump_genome(genome) if args.canonical else (zoo_dir() / f"{args.name}.yaml").read_text(), end="")
        return 0
    reference = yaml.safe_load((zoo_dir() / "reference.yaml").read_text())
    print(f"{'name':<20} {'params':>8} {'paper':>6} {'diff':>6}  {'GFLOPs':>6} {'paper':>6} {'diff':>6}  family")
    notes = []
    for name in zoo_names():
        cost = analytic_cost(load_genome(f"zoo:{name}"))
        ref = reference.get(name, {})
        params, flops = cost.trainable_params / 1e6, cost.flops / 1e9
        mark = "*" if any(key.endswith("_mismatch") for key in ref) else ""
        notes += [name] if mark else []
        print(f"{name:<20} {params:>7.2f}M {_ref(ref.get('params_m')):>6} {_diff(params, ref.get('params_m')):>6}  "
              f"{flops:>6.3f} {_ref(ref.get('gflops')):>6} {_diff(flops, ref.get('gflops')):>6}  "
              f"{ref.get('family', '')}{mark}")
    if notes:
        print(f"* differs from the paper for a stated reason; see zoo/reference.yaml ({', '.join(notes)})")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from nas.errors import printable
    from nas.io import dump_genome, file_read, load_genome
    from nas.outputs import distinct_outputs, output_file
    from nas.scale import RULES, scale_genome

    out = output_file(args.output, "-o", (".yaml", ".yml")) if args.output else None  # before any work
    distinct_outputs([("-o", out)], [("the genome", file_read(args.genome))])
    base = load_genome(args.genome)
    result = scale_genome(base, args.flops, rule=args.rule)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    if out:
        dump_genome(result.genome, out)
    if args.json:
        return 0
    e_d, e_w, e_r = RULES[args.rule]
    lines = [f"{printable(base.name)} scaled by {args.rule} (FLOPs^{e_d:.3g} depth, FLOPs^{e_w / 2:.3g} width, "
             f"FLOPs^{e_r / 2:.3g} resolution) to {_fmt_flops(result.cost.flops)} FLOPs: target "
             f"{_fmt_flops(result.target_flops)} ({result.ratio - 1:+.1%}), base {_fmt_flops(result.base_cost.flops)}; "
             f"{_fmt_count(result.cost.params)} params (base {_fmt_count(result.base_cost.params)})",
             "factors from the rule: " + ", ".join(f"{k} x{v:.3f}" for k, v in result.factors.items())
             + "; then " + (", ".join(result.adjustments) or "no fix-up"),
             f"{'stage':<8} {'depth':>10} {'width':>14}"]
    for i, (old, new) in enumerate(zip(base.stages, result.genome.stages)):
        lines.append(f"{i:<8} {f'{old.depth} -> {new.depth}':>10} {f'{old.width} -> {new.width}':>14}")
    lines.append(f"input    {'x'.join(map(str, base.input.resolution))} -> "
                 f"{'x'.join(map(str, result.genome.input.resolution))}")
    if out:
        print("\n".join(lines))
        print(f"wrote {out} ({printable(result.genome.name)}, hash {result.genome.content_hash()})")
    else:  # the summary as YAML comments, so that stdout is the genome: nas scale ... > scaled.yaml
        print("\n".join("# " + line for line in lines))
        print(dump_genome(result.genome), end="")
    return 0


def _zoo_weights(args: argparse.Namespace) -> int:
    from nas.errors import InputError
    from nas.io import file_read
    from nas.outputs import distinct_outputs, output_file
    from nas.weights import convert_checkpoint, read_checkpoint, save_weights, weight_map

    if not args.name or not args.source:
        raise InputError("nas zoo weights needs a NAME and --from CHECKPOINT (a timm .safetensors or .pth file)")
    spec = weight_map(args.name)  # an unknown or unmapped name, before any file is read
    out = output_file(args.output or f"{args.name}.pt", "-o", (".pt", ".pth", ".safetensors"))
    distinct_outputs([("-o", out)], [("--from", file_read(args.source))])
    state = convert_checkpoint(args.name, read_checkpoint(args.source), source=args.source)
    save_weights(state, out)
    print(f"wrote {out}: {len(state)} tensors of zoo:{args.name} from {args.source} (timm's {spec.reference}); "
          f"load with compile_model('zoo:{args.name}', weights='{out}')")
    if spec.note:
        print(f"note: {spec.note}")
    return 0


def _ref(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _diff(measured: float, published: float | None) -> str:
    return "-" if not published else f"{100 * (measured - published) / published:+.1f}%"


def _summary(doc: str | None, width: int = 96) -> str:
    """A docstring's first sentence on one line."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    end = text.find(". ")
    text = text if end < 0 else text[:end + 1]
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def cmd_blocks(args: argparse.Namespace) -> int:
    from blocks import CONFIGS
    from nas.errors import InputError

    roles = [args.role] if args.role is not None else sorted(CONFIGS)
    if args.role is not None and args.role not in CONFIGS:  # '' too, which listed every role
        raise InputError(f"unknown role {args.role!r}; roles are {', '.join(sorted(CONFIGS))}")
    for role in roles:
        print(f"{role}:")
        for tag, cls in sorted(CONFIGS[role].items()):
            print(f"  {tag:<22} {_summary(cls.module.__doc__ or cls.__doc__)}")
            if args.fields:
                for name, field in cls.model_fields.items():
                    if name != "type":
                        default = "required" if field.is_required() else f"default {field.get_default()!r}"
                        print(f"      {name}: {default}")
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_search(args: argparse.Namespace) -> int:
    import signal

    from nas.flags import given_flags
    from nas.search import SearchOptions, search

    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop (SLURM, kill) ends the run like Ctrl-C

    search(out=args.out, resume=args.resume or False, quiet=args.quiet, as_worker=args.as_worker,
           **given_flags(args, SearchOptions))
    return 0


# The terms of a proxy score that nas score prints, by size (the objective has two dozen).
SHOWN_CONTRIBUTIONS = 6
# The options of a search that decide a genome's score; `nas score` takes them with the search's own flags.
SCORE_OPTIONS = ("space", "objective", "supernet", "data", "data_limit", "seed", "second", "device", "threads",
                 "proxy_batch", "epochs", "batch_size", "latency_mode", "latency_repeats")


def cmd_score(args: argparse.Namespace) -> int:
    from nas.cost.profile import with_resolution
    from nas.errors import InputError, NasError, printable
    from nas.flags import given_flags
    from nas.io import parse_genome, read_yaml
    from nas.search import SearchOptions
    from nas.search.run import validated_options
    from nas.search.scoring import latency_table, score_genome, search_inputs, set_up_device, training_batch
    from nas.search.trial import TrialWork
    from nas.space import is_space

    given = given_flags(args, SearchOptions)
    if given.get("objective") == "custom":
        raise InputError("--objective custom needs a Python evaluate callable; use nas.search(evaluate=...)")
    options = validated_options(given, as_flags=True).check()  # a flag argparse left as text (--batch-size)
    # --space only picks the objective's fit here; a file that is missing or no space is still a mistake
    if "space" in given and not is_space(read_yaml(options.space)[0]):
        raise InputError(f"{options.space}: not a search space (--space names the space whose search scores it)")
    data, text, label = read_yaml(args.genome)
    if is_space(data):
        raise InputError(f"{label}: a search space, not a genome; nas score scores one genome (nas search "
                         "scores a space's)")
    genome = with_resolution(parse_genome(data, label, text), args.resolution)
    device = set_up_device(options)
    inputs, space = search_inputs(genome.to_dict(), options)  # with the data's classes and channels
    genome = parse_genome(space)
    if options.objective == "train":  # its training memory (on stderr: stdout may be --json), and an auto batch
        options, line = training_batch(options, genome, inputs.dataset, device, printable(genome.name))
        print(line.strip(), file=sys.stderr)
    result = score_genome(genome, TrialWork(space, options, device, inputs, None, latency_table(options)))
    contributions, unweighed, lacking = {}, [], []
    if options.objective == "proxy" and result.failure is None:
        from nas.evaluate.proxy import (
            SPARSE_DESCRIPTORS,
            lacking_descriptors,
            objective_contributions,
            objective_terms,
            unweighed_descriptors,
        )

        terms = objective_terms(genome, result.components)
        contributions = objective_contributions(terms, options.proxy_batch, options.objective_fit)
        unweighed = unweighed_descriptors(terms, options.objective_fit)
        lacking = lacking_descriptors(terms, options.objective_fit)
    if args.json:
        print(json.dumps({**result.as_dict(), "contributions": contributions, "unweighed": unweighed,
                          "lacking": lacking,
                          "fit": options.objective_fit if options.objective == "proxy" else None,
                          "hash": genome.content_hash(),
                          "device": device,
                          "input": [genome.input.channels, *genome.input.resolution],
                          "num_classes": genome.num_classes, "options": options.model_dump(include=set(
                              SCORE_OPTIONS))}, indent=2))
    if result.failure is not None:
        raise NasError(f"{args.genome}: cannot be scored: {result.failure}")
    if args.json:
        return 0
    what = {"proxy": f"training-free scores on {options.data or 'the structured default batch'} "
                     f"({options.proxy_batch} images)",
            "train": f"validation accuracy after {options.epochs} epochs on {options.data}",
            "supernet": f"validation accuracy with the weights of {options.supernet}"}[options.objective]
    res = "x".join(map(str, genome.input.resolution))
    print(f"{printable(genome.name)} (hash {genome.content_hash()}), {genome.input.channels}x{res} input, "
          f"{genome.num_classes} classes, on {device}")
    print(f"objective {options.objective}: {what}, seed {options.seed}")
    print(f"  {'score':<16} {result.score:>12.4f}   what the search maximises")
    for name, value in result.components.items():
        print(f"  {name:<16} {value:>12.4g}")
    if contributions:
        largest = sorted(contributions, key=lambda k: -abs(contributions[k]))[:SHOWN_CONTRIBUTIONS]
        print(f"how the score is made: the {len(largest)} largest of its {len(contributions)} terms, each against "
              f"the corpus's average genome (nas/evaluate/objectives/{options.objective_fit}.json, the "
              f"objective of a search of --space{' given --data' if options.data else ''}; --json lists all)")
        for name in largest:
            # A descriptor the genome lacks still counts: the average genome has some of it.
            absent = "  (none here)" if name.startswith(SPARSE_DESCRIPTORS) and not terms.get(name) else ""
            print(f"  {name:<28} {contributions[name]:>+8.4f}{absent}")
    if lacking:
        print(f"the objective weighs map sizes this genome does not have: {', '.join(lacking)} (they add nothing: "
              "the score says nothing of those maps)")
    if unweighed:
        print(f"the objective's corpus held none of: {', '.join(unweighed)} (weighed 0: the score says nothing "
              "of them)")
    line = f"params {_fmt_count(result.params)}, FLOPs {_fmt_flops(result.flops)}"
    if result.latency_ms is not None:
        line += (f", latency {result.latency_ms:.2f} ms ({options.latency_mode}, batch 1, median of "
                 f"{options.latency_repeats})")
    print(line)
    return 0


def cmd_supernet_train(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from nas.errors import InputError
    from nas.flags import flag_name, given_flags
    from nas.supernet import SupernetTrainOptions, train_supernet

    given = given_flags(args, SupernetTrainOptions)
    if args.resume:  # training saves its checkpoint on Ctrl-C and SIGTERM (a scheduler's stop)
        resume = args.resume if isinstance(args.resume, str) else True
        if resume is True and not args.out:
            raise InputError("--resume needs the run directory: --resume RUN (or --out RUN)")
        ignored = [k for k in given if k != "epochs"]
        if ignored:  # a resumed run is the run that was not stopped: its options are its own
            flag = flag_name(SupernetTrainOptions, ignored[0])
            raise InputError(f"{flag}: a resumed run keeps the options it was started with; only --epochs "
                             f"may change")
        train_supernet(out=args.out, resume=resume, epochs=args.epochs, quiet=args.quiet)
        return 0
    try:
        options = SupernetTrainOptions(**given)
    except ValidationError as err:  # a flag read as text (--batch-size) is checked here
        first = err.errors()[0]
        raise InputError(f"{flag_name(SupernetTrainOptions, str(first['loc'][0]))}: "
                         f"{first['msg'].removeprefix('Value error, ')}") from None
    train_supernet(options, out=args.out, quiet=args.quiet)
    return 0


def cmd_latency_calibrate(args: argparse.Namespace) -> int:
    from nas.cost.calibration import MIN_GENOMES, MOST_GENOMES, calibrate
    from nas.cost.latency import runtime_version
    from nas.cost.profile import default_table_path, open_table, resolve_device
    from nas.errors import GenomeError, InputError
    from nas.io import file_read
    from nas.outputs import distinct_outputs, output_file, write_atomic
    from nas.space import check_space, read_space, sample_genomes

    if args.genomes < MIN_GENOMES:
        raise InputError(f"--genomes must be at least {MIN_GENOMES}, got {args.genomes}")
    if args.genomes > MOST_GENOMES:  # drawing billions of distinct genomes never ended, and printed nothing
        raise InputError(f"--genomes must be at most {MOST_GENOMES:,}, got {args.genomes:,}")
    device = resolve_device(args.device)
    threads = args.threads or (1 if device == "cpu" else None)  # as nas search times on a CPU
    out = output_file(args.json, "--json") if args.json else None
    # the default table too: --json naming it replaced the table just calibrated, and every entry timed before
    distinct_outputs([("--json", out)], [("--table", file_read(args.table or default_table_path())),
                                        ("the space", file_read(args.space))])
    space, text, label = read_space(args.space)
    try:  # a field no genome has (num_clases) failed each draw as an internal error, not as this file's line
        check_space(space, samples=0, seed=args.seed)
    except GenomeError as err:
        raise err.located(label, text) from None
    genomes = sample_genomes(space, args.genomes, seed=args.seed)
    if len(genomes) < MIN_GENOMES:  # a genome, or a space of a few: refused before any timing, not after it
        raise InputError(f"{label}: {len(genomes)} distinct valid genome(s) drawn; a calibration needs at least "
                         f"{MIN_GENOMES}")
    table = open_table(args.table)
    runtime_version(args.runtime)  # refused before any timing when it cannot run here
    print(f"nas latency calibrate: {len(genomes)} genomes of {label} on {device} under {args.runtime}"
          f"{f', {threads} thread(s)' if threads else ''}, each timed by the table {table.path} and end to end "
          f"({args.repeats} runs), then end to end again after the last", file=sys.stderr)
    tick = time.perf_counter()

    def progress(i: int, row: dict) -> None:
        if row["again_ms"] is None:  # the first pass: the table's entries and one end-to-end timing
            left = (time.perf_counter() - tick) / (i + 1) * (len(genomes) - i - 1)
            print(f"  {i + 1}/{len(genomes)}: measured {row['measured_ms']:.4g} ms, table {row['table_ms']:.4g} ms"
                  f"  ~{left:.0f}s left in this pass", file=sys.stderr, flush=True)
        else:
            print(f"  again {i + 1}/{len(genomes)}: {row['again_ms']:.4g} ms (first {row['measured_ms']:.4g})",
                  file=sys.stderr, flush=True)

    run = calibrate(genomes, table, device, threads=threads, warmup=args.warmup, repeats=args.repeats,
                    seed=args.seed, progress=progress, runtime=args.runtime)
    cal = run.calibration
    print(f"calibration for {cal.device} stored in {table.path} ({run.seconds:.0f}s)")
    print(cal.describe())
    if out:
        write_atomic(out, json.dumps({"space": label, "calibration": json.loads(cal.to_json()), "rows": run.rows,
                                      "seconds": run.seconds}, indent=1) + "\n")
    return 0


def cmd_latency_show(args: argparse.Namespace) -> int:
    from nas.cost.calibration import list_calibrations
    from nas.cost.profile import open_table

    table = open_table(args.table)
    calibrations = list_calibrations(table)
    if not calibrations:
        print(f"{table.path}: {len(table)} block entries, no calibration (make one with nas latency calibrate)")
        return 0
    print(f"{table.path}: {len(table)} block entries, {len(calibrations)} calibration(s)")
    for cal in calibrations:
        f = cal.fingerprint
        print(f"{cal.device}: {f['name']}, torch {f['torch']}, {f['dtype']}, batch {f['batch']}, "
              f"{f['threads']} thread(s), made {cal.created}\n  {cal.describe()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nas.search import write_report

    result = write_report(args.run)
    print(result.summary())
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nas")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from nas.flags import add_flags
    from nas.search.options import Runtime, SearchOptions
    from nas.supernet.train import SupernetTrainOptions

    parser = _Parser(prog="nas", description="Neural architecture search and composition for hybrid vision "
                     "backbones.")
    parser.add_argument("--version", action="version", version=f"nas {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check a genome or a search space", description="Check a genome or a "
                       "space: structure, types and shapes. Prints its size and cost, or every problem found.")
    p.add_argument("file", help=GENOME_HELP + ", or a space")
    p.add_argument("--graph", metavar="OUT", help="also write the genome's graph (.dot, .gv or .graphml)")
    p.add_argument("--samples", type=_at_least(0), default=64, help="random genomes drawn to check a space, "
                   "besides one for each option of each choice where there are few enough (the output says when not; "
                   "default 64)")
    p.add_argument("--seed", type=_seed, default=0, help="seed for those draws")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("profile", help="cost per stage: params, FLOPs, memory, latency",
                       description="Per-stage params, FLOPs and output shapes from the genome's analytic count; "
                       "optionally fvcore's count of the compiled model and measured latency.")
    p.add_argument("genome", help=GENOME_HELP)
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N] (default cpu)")
    p.add_argument("--resolution", type=_resolution, help="override the genome's input resolution: 224, or "
                   "800x1333 (height x width)")
    p.add_argument("--batch", type=int, default=1, help="batch for memory and latency (default 1)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="for memory and latency; half precision uses autocast on CUDA")
    p.add_argument("--fvcore", action="store_true", help="also count FLOPs with fvcore on the compiled model")
    p.add_argument("--latency", action="store_true", help="measure latency on the device")
    p.add_argument("--runtime", default="eager", choices=get_args(Runtime),
                   help="what --latency times: eager PyTorch, torch.compile, or the ONNX export under ONNX Runtime")
    p.add_argument("--threads", type=int, help="CPU threads for latency (default: torch's current setting)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs for latency (default 30)")
    p.add_argument("--table", metavar="PATH", help="per-block latency cache (default $NAS_CACHE_DIR or "
                   "~/.cache/nas/latency.sqlite)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("schema", help="print the genome JSON Schema", description="Print the JSON Schema of "
                       "genome files, for editor validation and completion.")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("compile", help="write a standalone model.py or ONNX file", description="Write a "
                       "standalone model.py (torch only) holding the classes the genome uses and the genome itself; "
                       "with --onnx, the compiled model as ONNX (torch.onnx.export, dynamo exporter).")
    p.add_argument("genome", help=GENOME_HELP)
    p.add_argument("-o", "--output", help="the model.py to write (default model.py, unless --onnx alone is given)")
    p.add_argument("--onnx", metavar="PATH", help="also (or, without -o, only) export the compiled model to this "
                   ".onnx file, weights from --seed, at the genome's resolution with a dynamic batch axis")
    p.add_argument("--weights", metavar="PATH", help="also save the compiled model's initial state dict here")
    p.add_argument("--seed", type=_seed, default=0, help="seed for those weights (default 0)")
    p.add_argument("--features-only", action="store_true", help="model.py builds the network without its "
                   "classifier: it returns the neck's pyramid (a list of NCHW maps, finest first), or without a "
                   "neck every stage's output")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("zoo", help="list or show shipped architectures, or map pretrained weights onto one",
                       description="Published architectures "
                       "written as genomes. Use zoo:NAME wherever a genome file is accepted.")
    p.add_argument("action", choices=["list", "show", "weights"],
                   help="weights: map a timm checkpoint onto the genome's state dict (nas zoo weights NAME --from "
                   "CHECKPOINT [-o OUT])")
    p.add_argument("name", nargs="?", help="the genome to show or to map weights onto")
    p.add_argument("--canonical", action="store_true", help="show the canonical form instead of the file")
    p.add_argument("--from", dest="source", metavar="CHECKPOINT", help="weights: the reference implementation's "
                   "checkpoint (timm's .safetensors, or a .pth read with weights_only=True)")
    p.add_argument("-o", "--output", help="weights: where to write the zoo state dict (.pt or .safetensors; "
                   "default NAME.pt)")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("scale", help="scale a genome to a FLOPs target by a scaling rule",
                       description="Scale a genome's depth, width and resolution to a FLOPs target. dWR is the fast "
                       "compound scaling of Dollar, Singh and Girshick (CVPR 2021): FLOPs^0.1 depth, FLOPs^0.4 "
                       "width, FLOPs^0.05 resolution; compound is EfficientNet's. Widths keep the genome's steps "
                       "(multiples of 8, head widths, groups), windows are refitted to the new maps, and the result "
                       "is within 5%% of the target by the analytic count, or the command fails (exit 2). Prints "
                       "the scaled genome as YAML after a summary in comments, or writes it with -o.")
    p.add_argument("genome", help=GENOME_HELP)
    p.add_argument("--flops", required=True, help="the target, as nas search --budget takes it: 8G, 800MFLOPs, 4e9")
    p.add_argument("--rule", default="dWR", choices=["dWR", "compound", "width", "depth", "resolution"],
                   help="how the FLOPs factor is shared between depth, width and resolution (default dWR)")
    p.add_argument("-o", "--output", help="write the scaled genome to this YAML file")
    p.add_argument("--json", action="store_true", help="machine-readable output: cost, factors and the genome")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser("blocks", help="list the block types genomes can use", description="Every registered "
                       "block type by role (stem, downsample, block, mixer, mlp, norm, head), with its summary.")
    p.add_argument("role", nargs="?", help="only this role")
    p.add_argument("--fields", action="store_true", help="also list each type's fields and defaults")
    p.set_defaults(func=cmd_blocks)

    p = sub.add_parser("score", help="score a genome as a search would", description="The objective a search "
                       "would give a genome, with each of its components: the training-free scores, or the "
                       "accuracy per epoch, and its cost. Exit 1 when the genome builds but cannot be scored "
                       "(its forward pass fails, or a score is not finite).")
    p.add_argument("genome", help=GENOME_HELP)
    p.add_argument("--resolution", type=_resolution, help="score the genome at another input resolution: 224, "
                   "or 800x1333 (height x width)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_flags(p.add_argument_group("options of the search that decide the score", "as nas search takes them"),
              SearchOptions, only=SCORE_OPTIONS)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("search", help="search a space under FLOPs, params and latency budgets",
                       description="Constrained multi-objective search (score up, latency down) over a space's "
                       "choices. Every trial is stored in the run directory as it starts and ends; --resume "
                       "continues a run after a crash. Writes best.yaml, best_model.py, pareto/, pareto.png, "
                       "report.md and trials.csv.")
    add_flags(p.add_argument_group("options of the search", "kept in RUN/run.yaml, so that --resume needs none "
                                   "of them; in Python, the fields of nas.search.SearchOptions"), SearchOptions)
    run = p.add_argument_group("this run")
    run.add_argument("--out", help="run directory (default runs/<timestamp>)")
    run.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN",
                     help="continue a run (default: --out, else the newest under runs/) with its own options; "
                     "--trials, --timeout and --workers may change, any other option given must match the run's")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("supernet", help="train a weight-sharing supernet for a space",
                       description="One network whose sub-networks are every genome of a space. Train it once, "
                       "then search it with nas search --objective supernet --supernet RUN.")
    supernet = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = supernet.add_parser("train", help="train a supernet (sandwich rule, in-place distillation)",
                            description="Train a supernet for a space: each step trains the largest genome on the "
                            "labels and the smallest and --random-per-step random genomes on the largest's "
                            "predictions. Writes RUN/supernet.pt (every epoch, every minute and on Ctrl-C), "
                            "history.csv, space.yaml and train.yaml; --resume RUN continues exactly where it "
                            "stopped.")
    add_flags(p.add_argument_group("options of the training", "kept in RUN/train.yaml; in Python, the fields of "
                                   "nas.supernet.SupernetTrainOptions"), SupernetTrainOptions)
    run = p.add_argument_group("this run")
    run.add_argument("--out", help="run directory (default runs/supernet-<timestamp>)")
    run.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN",
                     help="continue a run from its checkpoint; only --epochs may change")
    run.add_argument("--quiet", action="store_true", help="print only errors")
    p.set_defaults(func=cmd_supernet_train)

    p = sub.add_parser("latency", help="calibrate the per-block latency table against end-to-end timing",
                       description="The per-block latency table (--latency-mode lut) reads low on most devices. "
                       "A calibration fits a correction per device and stores it in the table; --latency-mode "
                       "predict uses it.")
    latency = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = latency.add_parser("calibrate", help="time genomes end to end and fit the table's correction",
                           description="Time --genomes random genomes of --space end to end (twice: the second is "
                           "the measurement's own noise) and by the table, fit a correction of the table's sum "
                           "over block families and memory traffic, and store it in the table with its held-out "
                           "accuracy (5-fold) and the margin budgets are checked with.")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N] (default cpu)")
    p.add_argument("--space", default="metaformer_hybrid", help="the space to draw genomes from (a shipped name "
                   "or a YAML file; default metaformer_hybrid)")
    p.add_argument("--genomes", type=int, default=40, help="genomes to time (default 40)")
    p.add_argument("--table", metavar="PATH", help="per-block latency table (default $NAS_CACHE_DIR or "
                   "~/.cache/nas/latency.sqlite)")
    p.add_argument("--threads", type=_at_least(1), help="CPU threads (default 1, as nas search times)")
    p.add_argument("--repeats", type=_at_least(1), default=10, help="timed runs per measurement (default 10)")
    p.add_argument("--warmup", type=_at_least(0), default=3, help="untimed runs first (default 3)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the genomes drawn and their weights")
    p.add_argument("--runtime", default="eager", choices=get_args(Runtime),
                   help="what the genomes and blocks are timed under (default eager)")
    p.add_argument("--json", metavar="PATH", help="also write every genome's timings and the fit here")
    p.set_defaults(func=cmd_latency_calibrate)
    p = latency.add_parser("show", help="list the table's calibrations", description="The calibrations a latency "
                           "table holds: device, setup and held-out accuracy.")
    p.add_argument("--table", metavar="PATH", help="per-block latency table (default as calibrate)")
    p.set_defaults(func=cmd_latency_show)

    p = sub.add_parser("report", help="rebuild a run directory's report from its storage",
                       description="Rewrite trials.csv, pareto/, best.yaml, best_model.py, pareto.png and "
                       "report.md of a search run from its Optuna storage.")
    p.add_argument("run", help="the run directory, e.g. runs/20250101-120000")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from nas.errors import NasError

    try:
        return args.func(args)
    except NasError as err:
        print("error: " + str(err).replace("\n", "\nerror: "), file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # `nas blocks | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # the environment, not the genome: unwritable output, full disk, ...
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's last resort: a message, not a traceback
        if args.debug or os.environ.get("NAS_DEBUG"):
            raise
        print(f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
