"""One `rldb-server` process on loopback, for the tests and the benchmarks.

ServerProcess writes the node's JSON config (a free port, data_dir under its
work directory for the disk engines), starts the `rldb-server` executable,
waits until the node answers a PING (and, when it has one, until its RESP
port accepts), and stops it with SIGTERM, SIGKILL once a bound has passed.
The node's output goes to a log file that every error message quotes, so
that a node that would not start or stop says why."""
import datetime
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rldb.net import protocol as p

from .ports import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[2]
PONG = b'{"Ok":{"message":"PONG"}}'


class ServerError(AssertionError):
    """A node did not start, stop or stay up as asked; the message ends with
    the tail of its log.  An AssertionError, so that a test reports it as
    the failed expectation it is."""


def tool(name):
    """A console script of this project: next to the running interpreter (the
    virtualenv's), else in the repository's .venv, else on PATH."""
    for folder in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (run `.venv/bin/pip install -e .`)")
    return found


def ping(port, host=LOOPBACK, timeout=1.0):
    """The payload of the node's reply to one PING on a fresh connection.
    Raises OSError (ConnectionError, socket.timeout) while nobody answers."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(p.encode_frame(p.PING, "ready?", b""))
        decoder = p.FrameDecoder()
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise ConnectionError("closed before the PING reply")
            frames = decoder.feed(data)
            if frames:
                return frames[0][2]


def _accepts(port, host):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class ServerProcess:
    """One rldb-server subprocess in its own work directory.

    Its config is {"port", "host", "storage_engine"} plus data_dir (for disk
    engines, under the work directory) plus `config`, written to
    workdir/config.json at once; `config_file` names an existing config to
    use as it is instead (relative to workdir, which is the process's cwd).
    Its stdout and stderr go to workdir/`log_name`.  After stop() or kill(),
    proc is None and returncode holds the exit status; start() again runs
    the node on the same config and data."""

    def __init__(self, workdir, engine="memory", *, name=None, config_file=None,
                 log_name="server.log", log_level="info", **config):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name or self.workdir.name
        if config_file is not None:
            if config:
                raise ValueError("ServerProcess: config_file and config keys exclude each other")
            self.config_path = Path(config_file)
            self.config = json.loads((self.workdir / self.config_path).read_text())
        else:
            self.config = {"port": config.pop("port", None) or free_port(), "host": LOOPBACK,
                           "storage_engine": engine}
            if engine != "memory":
                self.config["data_dir"] = str(self.workdir / "data")
            self.config.update(config)
            self.config_path = self.workdir / "config.json"
            self.write_config()
        self.port = self.config["port"]
        self.host = self.config.get("host", LOOPBACK)
        self.log_path = self.workdir / log_name
        self.log_level = log_level
        self.proc = None
        self.log_file = None
        self.returncode = None

    def write_config(self):
        """Writes self.config to config_path (again, after a change to it)."""
        (self.workdir / self.config_path).write_text(json.dumps(self.config, indent=1))

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    @property
    def data_dir(self):
        data_dir = self.config.get("data_dir")
        return None if data_dir is None else self.workdir / data_dir

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, timeout=15.0):
        """Starts the node and waits until it answers a PING (and its RESP
        port, if it has one, accepts); self.  Raises ServerError if the
        process exits first or does not answer within `timeout` (it is then
        killed)."""
        if self.running:
            raise ServerError(f"{self.name} is already running")
        self.log_file = open(self.log_path, "ab")
        self.log_file.write(f"---- start {datetime.datetime.now():%Y-%m-%d %H:%M:%S} ----\n"
                            .encode())
        self.log_file.flush()
        command = [tool("rldb-server"), "--config-path", str(self.config_path)]
        if self.log_level is not None:
            command += ["--log-level", self.log_level]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, cwd=str(self.workdir))
        resp_port = self.config.get("resp_port")
        deadline = time.monotonic() + timeout
        answered = False
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._reap()
                raise ServerError(f"{self.name} exited with {code} at start\n{self.log()}")
            if not answered:
                try:
                    reply = ping(self.port, self.host)
                except OSError:
                    pass
                else:
                    if reply != PONG:
                        self.kill()
                        raise ServerError(f"{self.name} answered PING with {reply!r}\n"
                                          f"{self.log()}")
                    answered = True
            if answered and (not resp_port or _accepts(resp_port, self.host)):
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(f"{self.name} did not answer within {timeout} s\n{self.log()}")
            time.sleep(0.02)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Sends `sig` and waits for the exit; its exit status (None if the
        node was not started).  A node still running after `timeout` is
        killed and ServerError raised."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError(f"{self.name} ignored {sig!r} for {timeout} s\n{self.log()}")
        return self._reap()

    def kill(self):
        """SIGKILL, as a crash: nothing flushed or closed.  Its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return self._reap()

    def restart(self, timeout=15.0):
        """Stops the node (it must exit 0) and starts it again on the same
        config and data directory; self."""
        code = self.stop(timeout=timeout)
        if code not in (0, None):
            raise ServerError(f"{self.name} exited with {code} on SIGTERM\n{self.log()}")
        return self.start(timeout)

    def close(self, timeout=5.0):
        """For teardown: stops the node if it runs, kills it if that fails,
        and never raises."""
        try:
            self.stop(timeout=timeout)
        except Exception:  # noqa: BLE001 - teardown goes on whatever happened
            pass
        self.kill()

    def _reap(self):
        self.returncode = self.proc.returncode
        self.proc = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        return self.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        """A clean exit (0) is part of what a block that raised nothing checks."""
        if exc_type is not None:
            self.close()
            return
        try:
            code = self.stop()
            if code not in (0, None):
                raise ServerError(f"{self.name} exited with {code} on SIGTERM\n{self.log()}")
        finally:
            self.kill()

    # ---- what it shows ---------------------------------------------------------------------

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        if not self.running:
            code = self.proc.returncode if self.proc is not None else self.returncode
            raise ServerError(f"{self.name} is not running (exit {code})\n{self.log()}")

    def log(self, limit=4000):
        """The last `limit` characters of the node's log ("" if it has none)."""
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""
