"""The wheel ships the YAML, and an installed copy finds it without the source tree."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_installed_copy_finds_the_shipped_yaml(tmp_path):
    wheels = tmp_path / "wheels"
    # From a copy without build outputs: setuptools reuses build/lib, which keeps files a checkout has deleted.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "runs", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("nas-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "search_spaces/zoo/caformer_s18.yaml" in names and "search_spaces/zoo/reference.yaml" in names
    assert {"nas/cli.py", "blocks/attention.py", "runners/__init__.py"} <= set(names)
    # the fitted objectives are data the search reads: one for any space, one for each space with a corpus, and
    # each one's twin for scores of real images (--data)
    assert {f"nas/evaluate/objectives/{name}{images}.json" for name in ("any", "metaformer_hybrid", "tiny")
            for images in ("", ".data")} <= set(names)

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    probe = ("import nas.io as io; g = io.load_genome('zoo:caformer_s18'); "
             "print(io.zoo_dir()); print(g.name); "
             "from nas.evaluate.proxy import OBJECTIVES, fitted_objective, objective_name; "
             "print(OBJECTIVES if fitted_objective('metaformer_hybrid')['features'] else ''); "
             "print(objective_name('metaformer_hybrid'))")
    # -I ignores PYTHONPATH and the cwd, so only the target copy can provide nas; run from an empty folder.
    run = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    zoo, name, objective, chosen = run.stdout.split()
    assert zoo.startswith(str(target)) and name == "caformer_s18" and objective.startswith(str(target))
    assert chosen == "metaformer_hybrid"  # the installed copy finds the default space's own fit
