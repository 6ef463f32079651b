#!/usr/bin/env bash
# The wheels benchmarks/cuda_checks.sh installs on the lent GPU machine, into .whl/ (ignored by git; a call of the
# device tool carries it with carry: [".whl"]). That machine's image has torch, numpy, scipy, scikit-learn, onnx
# and onnxruntime but not the rest of nas's needs; it runs Python 3.12 and reaches no registry. The versions are
# this machine's own. From the repository root: bash benchmarks/cuda_wheels.sh
set -eu
version() { python3 -m pip show "$1" | awk '/^Version/{print $2}'; }
pinned() { for name in "$@"; do printf '%s==%s ' "$name" "$(version "$name")"; done; }
platforms=""
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014; do
    platforms="$platforms --platform ${tag}_x86_64"
done
# shellcheck disable=SC2046,SC2086  # word splitting is the point: one argument a package and a platform
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
    -d .whl $(pinned optuna pydantic pydantic-core sqlalchemy alembic colorlog annotated-types typing-inspection \
    termcolor mako yacs typing-extensions) greenlet
# fvcore and iopath publish no wheels: built here (pure Python)
# shellcheck disable=SC2046
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl $(pinned fvcore iopath)
mkdir -p .git/info
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
ls .whl
