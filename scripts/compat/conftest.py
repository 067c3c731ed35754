"""Runs the real `ferrymq` binary for the compatibility tests.

`broker` is one single-node broker per test module, in its own temporary data dir on a free
loopback port; `broker_factory` starts brokers that live for one test, for tests that stop and
restart them. Every broker is stopped by PID at teardown (SIGTERM, then SIGKILL if it hangs), and
the stderr of every broker a failed test used is attached to that test's report.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

# How long a broker may take to accept TCP connections after it is started.
STARTUP_TIMEOUT_S = 20.0
# How long SIGTERM may take before the broker is killed.
SHUTDOWN_TIMEOUT_S = 20.0
# How much of a broker's stderr goes into a failed test's report.
LOG_TAIL_LINES_MAX = 300


def ferrymq_bin():
    """The broker binary under test, from FERRYMQ_BIN (run.sh checks it before pytest starts)."""
    path = os.environ.get("FERRYMQ_BIN", "")
    if not path:
        pytest.exit("FERRYMQ_BIN is not set: point it at the ferrymq binary", returncode=2)
    if not os.access(path, os.X_OK):
        pytest.exit(f"FERRYMQ_BIN={path} is not an executable file", returncode=2)
    return path


def free_port():
    """A loopback port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """One `ferrymq serve` process; `start`/`stop` may repeat on the same data dir and port."""

    def __init__(self, data_dir, log_path, overrides=None):
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.overrides = dict(overrides or {})
        self.port = free_port()
        self.proc = None
        # Exit codes of earlier runs of this broker, oldest first.
        self.exit_codes = []

    @property
    def bootstrap(self):
        """The `host:port` that clients bootstrap from."""
        return f"127.0.0.1:{self.port}"

    def start(self):
        assert self.proc is None, f"broker on {self.bootstrap} is already running"
        argv = [
            ferrymq_bin(), "serve",
            "--listen", self.bootstrap,
            "--data-dir", str(self.data_dir),
            # Port 0: several brokers on one host, each with its own admin listener.
            "--admin-listen", "127.0.0.1:0",
        ]
        for key, value in self.overrides.items():
            argv += ["--override", f"{key}={value}"]
        with open(self.log_path, "ab") as log:
            log.write(f"==== start: {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_accepting()

    def _wait_until_accepting(self):
        # The broker has no readiness signal other than its listening socket, so poll it.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                self.exit_codes.append(code)
                raise RuntimeError(
                    f"ferrymq exited with code {code} during startup:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"ferrymq did not accept connections on {self.bootstrap} within "
                        f"{STARTUP_TIMEOUT_S:.0f}s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig` and waits for the exit; kills the process if it does not exit in time.

        Returns the exit code (negative for a signal, as in `subprocess`).
        """
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with open(self.log_path, "ab") as log:
                    log.write(f"==== no exit {SHUTDOWN_TIMEOUT_S:.0f}s after {sig!r}: SIGKILL\n".encode())
                proc.kill()
                proc.wait()
        self.proc = None
        self.exit_codes.append(proc.returncode)
        with open(self.log_path, "ab") as log:
            log.write(f"==== exited with code {proc.returncode}\n".encode())
        return proc.returncode

    def kill(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        """Stops with SIGTERM and starts again on the same data dir and port."""
        code = self.stop()
        self.start()
        return code

    def log_tail(self):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES_MAX:])

    def describe(self):
        state = "running" if self.proc and self.proc.poll() is None else "not running"
        if self.proc is not None and self.proc.poll() is not None:
            state = f"DIED with code {self.proc.returncode}"
        return f"ferrymq {self.bootstrap} ({state}, data dir {self.data_dir})"


class BrokerFactory:
    """Starts brokers that belong to one test and stops them all at its end."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.brokers = []

    def start(self, overrides=None):
        index = len(self.brokers)
        data_dir = self.tmp_path / f"broker{index}-data"
        data_dir.mkdir()
        broker = Broker(data_dir, self.tmp_path / f"broker{index}.log", overrides)
        self.brokers.append(broker)
        broker.start()
        return broker

    def stop_all(self):
        for broker in self.brokers:
            broker.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A single-node broker shared by the tests of one module; tests use distinct topics."""
    tmp = tmp_path_factory.mktemp("ferrymq")
    data_dir = tmp / "data"
    data_dir.mkdir()
    node = Broker(data_dir, tmp / "broker.log")
    node.start()
    yield node
    node.stop()


@pytest.fixture
def broker_factory(tmp_path):
    """Brokers for one test (e.g. one that restarts its broker); all stopped at teardown."""
    factory = BrokerFactory(tmp_path)
    yield factory
    factory.stop_all()


def _brokers_of(item):
    funcargs = getattr(item, "funcargs", {})
    for value in funcargs.values():
        if isinstance(value, Broker):
            yield value
        elif isinstance(value, BrokerFactory):
            yield from value.brokers


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for node in _brokers_of(item):
        report.sections.append((f"stderr of {node.describe()}", node.log_tail()))
