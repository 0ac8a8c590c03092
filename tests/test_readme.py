"""The README, run as a newcomer would run it, so that it cannot drift.

Every fenced block of README.md is taken in order inside a sandbox
directory (a link to this virtualenv as `.venv`, copies of `conf/`, a fresh
`data/`): Python blocks run as scripts, shell blocks line by line.  The
README's fixed ports (3001-3003, 6380) are mapped to free ones, in the
commands and in the copied configurations alike.  `rldb-server` lines start
a node in the background, as a second shell would; `make serve` runs the
command the Makefile gives for it.  A line the walk does not know how to run
fails the test, so a new command in the README needs a rule here."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.net_helpers import free_port

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
VENV = Path(sys.prefix)  # the virtualenv this suite runs in: the README's .venv
README_PORTS = ("3001", "3002", "3003", "6380")
RETRY_S = 15.0  # a cluster command right after a join may find the ring still moving


def readme_blocks():
    """(language, text, first line number) of every fenced block."""
    out, lang, lines, start = [], None, [], 0
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, lines, start = line[3:].strip() or "sh", [], number + 1
            else:
                out.append((lang, "\n".join(lines), start))
                lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, "README.md has an unclosed code block"
    return out


def shell_lines(text):
    """The commands of a shell block, without their trailing comments."""
    for line in text.splitlines():
        command = re.split(r"\s{2,}#", line)[0].strip()
        if command and not command.startswith("#"):
            yield command


class Sandbox:
    """A directory laid out like a checkout, where the README's commands run."""

    def __init__(self, root):
        self.root = root
        self.ports = {p: str(free_port()) for p in README_PORTS}
        (root / ".venv").symlink_to(VENV, target_is_directory=True)
        (root / "conf").mkdir()
        for conf in (REPO / "conf").glob("*.json"):
            (root / "conf" / conf.name).write_text(self.map_ports(conf.read_text()))
        self.servers = {}  # config path -> Popen
        self.context = None
        self.ran = []

    def map_ports(self, text):
        return re.sub(r"\b(3001|3002|3003|6380)\b", lambda m: self.ports[m.group(1)], text)

    def port(self, readme_port):
        return int(self.ports[readme_port])

    def env(self):
        env = dict(os.environ)
        env["PATH"] = f"{self.root / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, command, retry=0.0):
        deadline = time.monotonic() + retry
        while True:
            done = subprocess.run(["bash", "-c", command], cwd=self.root, env=self.env(),
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.3)
        assert done.returncode == 0, f"README command failed: {command}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, f"{command}\n{done.stderr}"
        self.ran.append(command)
        return done.stdout

    def start_server(self, command):
        config = command.split("--config-path", 1)[1].split()[0]
        log = open(self.root / f"{Path(config).stem}.log", "wb")
        proc = subprocess.Popen(["bash", "-c", f"exec {command} --log-level warning"],
                                cwd=self.root, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        port = json.loads((self.root / config).read_text())["port"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{command} exited:\n{(self.root / log.name).read_text()}"
            ping = subprocess.run([str(self.root / ".venv/bin/rldb-client"), "ping", "-p", str(port)],
                                  capture_output=True)
            if ping.returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"{command} did not answer a ping within 30 s")
        self.servers[config] = proc
        self.ran.append(command)

    def stop_servers(self, wait_for_exit=()):
        """Stops every node; those in wait_for_exit first stop by themselves
        (a leaving node needs the others until it has handed everything on)."""
        order = sorted(self.servers.items(), key=lambda item: item[0] not in wait_for_exit)
        for config, proc in order:
            if config in wait_for_exit:
                proc.wait(timeout=60)  # it stops by itself (it left the cluster)
            elif proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
            del self.servers[config]


def run_python(sandbox, code):
    done = subprocess.run([sys.executable, "-c", sandbox.map_ports(code)], cwd=sandbox.root,
                          env=sandbox.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"README snippet failed:\n{code}\n{done.stderr}"
    sandbox.ran.append(code)
    return done.stdout


def run_shell_line(sandbox, command, in_cluster):
    """Runs one README command the way a reader would."""
    words = command.split()
    if words[:2] == ["make", "serve"]:
        serve = subprocess.run(["make", "-s", "-n", "serve"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip().splitlines()[-1]
        assert "rldb-server --config-path conf/standalone.json" in serve, serve
        sandbox.start_server(serve)
        sandbox.ran.append(command)
    elif words[:2] == ["make", "test"]:
        # this suite is what `make test` runs: the walk only checks the target is there
        dry = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True)
        assert dry.returncode == 0 and "pytest" in dry.stdout, dry.stdout + dry.stderr
        sandbox.ran.append(command)
    elif words[0].endswith("rldb-server"):
        if "conf/cluster_node_1.json" in command:
            sandbox.stop_servers()  # the README says: stop the standalone node first
        sandbox.start_server(sandbox.map_ports(command))
    elif words[0] == "redis-cli":
        if shutil.which("redis-cli") is None:
            return "skipped"
        sandbox.run(sandbox.map_ports(command))
    elif words[0].endswith(("rldb-client", "rldb-sstable")) or words[0] == "ls":
        if "<context from the get>" in command:
            assert sandbox.context, "the README puts with a context before any get showed one"
            command = command.replace("<context from the get>", sandbox.context)
        out = sandbox.run(sandbox.map_ports(command), retry=RETRY_S if in_cluster else 0.0)
        if words[1:2] == ["get"]:
            sandbox.context = json.loads(out)["context"]
        if words[0] == "ls" and "the table is" in README.read_text():
            named = re.search(r"the table is (\d+\.sst)", README.read_text()).group(1)
            assert named in out.split(), f"README names {named}; ls shows {out!r}"
    else:
        pytest.fail(f"the README shows a command this test cannot run: {command!r}")
    return "ran"


def test_every_block_of_the_readme_runs_as_printed(tmp_path):
    sandbox = Sandbox(tmp_path)
    skipped = []
    in_cluster = False
    try:
        for lang, text, line in readme_blocks():
            if lang == "python":
                run_python(sandbox, text)
                continue
            if lang == "text":
                continue  # a picture (the layout), not commands
            assert lang == "sh", f"README.md line {line}: a block of unknown language {lang!r}"
            for command in shell_lines(text):
                in_cluster = in_cluster or "cluster_node_1.json" in command
                if run_shell_line(sandbox, command, in_cluster) == "skipped":
                    skipped.append(command)
        # the last block ends with `leave -p 3003`: that node stops by itself
        sandbox.stop_servers(wait_for_exit={"conf/cluster_node_3.json"})
    finally:
        for proc in sandbox.servers.values():
            proc.kill()
    assert len(sandbox.ran) >= 30, sandbox.ran
    if skipped:
        pytest.skip(f"redis-cli is not installed: {len(skipped)} README lines not run "
                    f"(the other {len(sandbox.ran)} ran)")


def test_the_storage_snippet_works_for_every_engine_it_names(tmp_path):
    """The first snippet shows lsm; its comment promises memory too."""
    sandbox = Sandbox(tmp_path)
    snippet = next(text for lang, text, _ in readme_blocks()
                   if lang == "python" and "open_engine(\"lsm\"" in text)
    memory = snippet.replace('open_engine("lsm", "data/example")', 'open_engine("memory")')
    assert memory != snippet
    out = run_python(sandbox, memory)
    assert "b'user:1' b'ada'" in out and "b'user:3' b'alan'" in out and "user:2" not in out


def test_the_readme_layout_points_to_the_architecture():
    text = README.read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):]
    assert "(docs/architecture.md)" in layout


def test_the_architecture_names_only_files_that_exist():
    """docs/architecture.md is the map: every module or C file it names is
    there (a move that forgets the map fails here)."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set()
    for ref in re.findall(r"`([\w/.]*(?:\{[\w,]+\})?[\w.]*\.(?:py|c|h))`", text):
        if ref.startswith("_") and "/" not in ref:
            continue  # "bitcask_store.c, _write.c, ...": a shorthand in a table
        stem, brace, rest = ref.partition("{")
        if brace:
            inner, _, ext = rest.partition("}")
            named.update(f"{stem}{part}{ext}" for part in inner.split(","))
        else:
            named.add(ref)
    roots = [REPO, REPO / "rldb", REPO / "rldb" / "cli", REPO / "csrc", REPO / "rldb" / "cluster", REPO / "rldb" / "net",
             REPO / "rldb" / "storage", REPO / "rldb" / "storage" / "lsm",
             REPO / "rldb" / "storage" / "bitcask", REPO / "rldb" / "_core"]
    missing = sorted(n for n in named if not any((root / n).exists() for root in roots))
    assert len(named) > 40, named
    assert missing == []
