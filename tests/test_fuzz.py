"""Property-based: any genome or space document, valid or broken, either validates or is refused as bad input
(exit 2, every line ``error: FILE: ...`` naming a YAML path or a line), quickly, never as an internal error.

Documents start from real genomes and spaces (the shipped ones and the zoo) and are mutated: a value replaced
by a hostile one (huge, negative, boolean, infinite, a string, a nested choice), a key dropped or misspelt, a
mapping where a number belongs, or the YAML text itself cut and spliced. What the fuzzer once found lies in
``tests/fuzz_corpus/`` and is replayed on every run.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.cli import main
from nas.io import read_yaml, zoo_names

CORPUS = Path(__file__).parent / "fuzz_corpus"
SEEDS = ["tiny", "mobile", "isotropic", "zoo:caformer_s18", "zoo:maxvit_t", "zoo:resnet50", "zoo:swin_t",
         "zoo:vmamba_t", "zoo:mobilenetv2_100"]
SEED_DOCS = {name: read_yaml(name)[0] for name in SEEDS}
TIME_LIMIT_S = 20  # a document that takes longer than this to refuse is a defect, like a hang

hostile = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70), st.sampled_from([0, -1, 1, 2**31, 65537, 10**12]),
    st.booleans(), st.none(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["attention", "dwconv", "layernorm", "metaformer", "conv", "gelu",
                                           "zoo:convnext_t", "../../etc/passwd", "{choice: [1]}", "\\", '"""']),
    st.lists(st.integers(min_value=-3, max_value=100), max_size=3),
    st.dictionaries(st.sampled_from(["type", "choice", "choise", "int", "float", "step", "log", "kernel",
                                     "heads", "width"]),
                    st.one_of(st.integers(-2, 64), st.lists(st.integers(-2, 64), max_size=3),
                              st.sampled_from(["attention", "dwconv", "pooling"])), max_size=3),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _copy(node: Any) -> Any:  # aliases in the seed documents share objects: a mutation must not spread
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


@st.composite
def documents(draw) -> str:
    doc = _copy(SEED_DOCS[draw(st.sampled_from(SEEDS))])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)[1:]
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "replace", "drop", "misspell", "wrap"]))
        if action == "replace":
            parent[key] = draw(hostile)
        elif action == "drop" and isinstance(parent, dict):
            del parent[key]
        elif action == "misspell" and isinstance(parent, dict) and isinstance(key, str) and key:
            parent[key[:-1] + draw(st.sampled_from("aezx_"))] = parent.pop(key)
        elif action == "wrap":
            parent[key] = {"choice": [parent[key], draw(hostile)]}
    text = yaml.safe_dump(doc, sort_keys=False)
    if draw(st.booleans()):  # and now and then, damage the text itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", ":", "- ", "{", "]", "&a ", "*a", "\t", "!!python/name:os ",
                                                  "<<: ", "'"])) + text[cut:]
    return text


def check_validate(text: str, folder: Path, capsys) -> None:
    file = folder / "doc.yaml"
    file.write_text(text)
    start = time.perf_counter()
    code = main(["validate", str(file), "--samples", "4"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.1f}s"
    if code == 2:
        lines = err.strip().splitlines()
        assert lines and all(line.startswith(f"error: {file}: ") for line in lines), err
        assert "Traceback" not in err


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(text=documents())
def test_any_document_validates_or_is_refused_as_bad_input(text: str, tmp_path: Path, capsys):
    check_validate(text, tmp_path, capsys)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
def test_what_the_fuzzer_found_stays_fixed(path: Path, tmp_path: Path, capsys):
    check_validate(path.read_text(), tmp_path, capsys)


def test_the_seeds_are_valid():
    assert set(SEEDS) - {"tiny", "mobile", "isotropic"} <= {f"zoo:{n}" for n in zoo_names()}
