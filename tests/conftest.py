from __future__ import annotations

import atexit
import json
import os
import pwd
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]

# A hybrid written the way a user would: conv stages, then attention stages.
HYBRID_YAML = """\
name: my_hybrid
input: {channels: 3, resolution: 64}
num_classes: 10
stem: {type: conv, kernel: 4, stride: 4, post_norm: layernorm}
defaults:
  norm: layernorm
  mlp: {type: mlp, ratio: 3, act: gelu}
  downsample: {type: conv, kernel: 2, stride: 2, pre_norm: layernorm}
stages:
  - {depth: 2, width: 32, block: {mixer: {type: sepconv, kernel: 5}}}
  - {depth: 2, width: 48, block: {type: convnext, kernel: 5}}
  - {depth: 2, width: 64, pattern: [{mixer: {type: attention, heads: 4, window: 2}},
                                    {mixer: {type: attention, head_dim: 16}}]}
  - {depth: 1, width: 96, block: {mixer: {type: attention, heads: 3}, layer_scale: 1.0e-5}}
head: {type: mlp_head, ratio: 2}
"""


@pytest.fixture
def hybrid_file(tmp_path: Path) -> Path:
    path = tmp_path / "hybrid.yaml"
    path.write_text(HYBRID_YAML)
    return path


def run_nas(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own, as a user runs it; ``env`` adds to the environment. The process is
    forked from a server that has imported ``nas`` already (tests/cli_server.py, which says what that leaves
    out); with ``env`` (read at import time, perhaps) or ``NAS_TEST_FRESH_CLI=1`` it is a fresh interpreter."""
    argv = [str(a) for a in args]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    if env is None and not os.environ.get("NAS_TEST_FRESH_CLI") and _CLI_SERVER.serves(full_env):
        return _CLI_SERVER.run(argv, Path(cwd or os.getcwd()), full_env)
    return subprocess.run([sys.executable, "-m", "nas", *argv], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=600)


class CliServer:
    """One tests/cli_server.py per test process, started on first use and stopped at exit."""

    TIMEOUT = 600
    # Read once, when a process starts (glibc's allocator, the interpreter, the loader, OpenMP): a command whose
    # environment differs in one of these needs a fresh interpreter.
    START_UP_ENV = ("MALLOC_", "PYTHON", "LD_", "OMP_", "MKL_", "KMP_")

    def __init__(self) -> None:
        self._server: subprocess.Popen | None = None
        self._env: dict[str, str] = {}

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a process forked from the server starts as a fresh one with ``env`` would."""
        server_env = self._env or {**os.environ, "PYTHONWARNINGS": "ignore"}
        names = {k for k in (*env, *server_env) if k.startswith(self.START_UP_ENV)}
        return all(env.get(k) == server_env.get(k) for k in names)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        if self._server is None or self._server.poll() is not None:
            self._env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            self._server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_server.py"))],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            env=self._env)
            atexit.register(self._server.kill)
        with tempfile.TemporaryDirectory(prefix="nas-cli-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self._server.stdin.write(json.dumps(request) + "\n")
            self._server.stdin.flush()
            ready, _, _ = select.select([self._server.stdout], [], [], self.TIMEOUT)
            if not ready:
                self._server.kill()
                raise subprocess.TimeoutExpired(["nas", *argv], self.TIMEOUT)
            answer = self._server.stdout.readline()
            if not answer:
                raise RuntimeError(f"the CLI server stopped while running nas {' '.join(argv)}")
            return subprocess.CompletedProcess(["nas", *argv], json.loads(answer)["status"],
                                               out.read_text(errors="replace"), err.read_text(errors="replace"))


_CLI_SERVER = CliServer()


# ---------------------------------------------------------------------------------------------------------------
# A throwaway PostgreSQL server for the tests of shared storage (tests/test_postgres.py). CI installs the server
# (.ci/run) and must never skip these tests; elsewhere they skip when no server binaries are found.

PG_DB, PG_USER = "nas", "nas"


def _pg_bin() -> Path | None:
    """The folder with initdb, pg_ctl and postgres: from PATH, else Debian's /usr/lib/postgresql/VERSION/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").exists():
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests (.ci/run installs the server)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user(home: Path) -> list[str]:
    """The prefix that runs the server's programs: none, or ``runuser -u postgres --`` as root (postgres refuses
    to run as root; the Debian package makes that user), which then owns ``home``."""
    if os.geteuid() != 0:
        return []
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        _missing("running as root, and no 'postgres' user to run the PostgreSQL server as")
    os.chown(home, owner.pw_uid, owner.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://nas@127.0.0.1:PORT/nas`` on a server of its own (trust auth, loopback only) in a temporary
    folder, stopped after the session."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        _missing("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql")
    try:  # the driver SQLAlchemy picks for a postgresql:// URL (psycopg 3 from SQLAlchemy 2.1 on)
        make_url("postgresql://").get_dialect().import_dbapi()
    except ImportError as err:
        _missing(f'no PostgreSQL driver ({err}): pip install -e ".[postgres]"')
    # In /tmp itself, not pytest's tmp_path: pytest-of-root is closed to the postgres user
    home = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    data, log, port = home / "data", home / "server.log", _free_port()

    def pg(program: str, *args: str, server: bool = True) -> None:
        command = [*(as_user if server else []), str(bin_dir / program), *args]
        done = subprocess.run(command, cwd=home, check=False, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"{program} failed: {done.stderr}{log.read_text() if log.exists() else ''}")

    try:
        as_user = _server_user(home)
        pg("initdb", "-D", str(data), "-U", PG_USER, "--auth=trust", "--no-sync", "--no-locale", "--encoding=UTF8")
        # fsync off: a throwaway server, and the tests kill its clients, never the server
        pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-o",
           f"-h 127.0.0.1 -p {port} -k {home} -c fsync=off -c synchronous_commit=off", "start")
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, PG_DB, server=False)
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/{PG_DB}"
    finally:
        if (data / "postmaster.pid").exists():
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


def assert_supernet_computes_what_it_extracts(space, genomes, x, samples: int = 0, atol: float = 1e-5,
                                              rtol: float = 1e-5) -> None:
    """Weight sharing needs no code of a family's own: each genome run from a supernet's shared weights computes
    what the plain network ``extract`` gives for it."""
    import torch

    from nas.supernet import Supernet

    net = Supernet.from_space(space, samples=samples).eval()
    for genome in genomes:
        net.set_active(genome)
        with torch.no_grad():
            torch.testing.assert_close(net(x), net.extract(genome).eval()(x), atol=atol, rtol=rtol)


def assert_edit_is_named(genome_yaml: str, edit: tuple[str, str], path: str, words: str, folder: Path) -> None:
    """The genome is valid as written; with ``edit`` (old, new) made to its text, loading it from a file fails
    with a GenomeError naming ``path`` and saying ``words``."""
    from nas.errors import GenomeError
    from nas.io import load_genome, parse_yaml

    load_genome(parse_yaml(genome_yaml))
    file = folder / "bad.yaml"
    file.write_text(genome_yaml.replace(*edit))
    with pytest.raises(GenomeError) as info:
        load_genome(file)
    assert info.value.path == path and words in str(info.value)
