"""End-to-end fixtures: start the real deltastored on 127.0.0.1 and stop it afterwards."""
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("DS_BUILD_DIR", ROOT / "build"))
FIXTURES = ROOT.parent / "shared" / "fixtures"

# The tests import their shared HTTP helpers (client_util.py) from this directory.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import stores  # noqa: E402  (from the directory above)


# In CI (the CI environment variable set, as .ci/run does) a skipped test is a failure: the fixtures,
# chromium, openssl and schemathesis are always installed there (scripts/setup.sh), so a skip would
# only hide a check that stopped running. Locally, skips stay skips with their reason.
def _ci():
    return bool(os.environ.get("CI"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"


def pytest_collectreport(report):
    if _ci() and report.skipped:
        report.outcome = "failed"


class Server:
    """A deltastored process on a free loopback port, restartable on the same data dir."""

    def __init__(self, data_dir, extra_args=(), verify=True, store_args=None):
        self.data_dir = pathlib.Path(data_dir)
        self.extra_args = list(extra_args)
        # --meta-store/--chunk-store: this session's mode (stores.py) unless given.
        self.store_args = stores.server_args(self.data_dir) if store_args is None else list(store_args)
        self.verify = verify  # for https: the CA bundle (the test's self-signed certificate)
        self.proc = None
        self.port = None
        self.scheme = "http"

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self):
        self.log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")
        self.proc = subprocess.Popen(
            [str(BUILD / "server" / "deltastored"), "--data-dir", str(self.data_dir),
             "--listen", f"127.0.0.1:{self.port or 0}", *self.store_args, *self.extra_args],
            stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        self.first_line = line  # "deltastored listening on …"
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"deltastored did not start: {line!r}")
        self.port = int(m.group(1))
        self.scheme = "https" if "(https" in line else "http"
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1, verify=self.verify).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("deltastored did not answer /healthz")

    def stop(self, sig=signal.SIGTERM):
        import client_util  # idle keep-alive connections of the test clients would delay the stop
        client_util.close_all()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        self.stop(signal.SIGKILL)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data").start()
    yield s
    s.stop()


@pytest.fixture
def fixtures():
    if not (FIXTURES / "faceres.bf16.safetensors").exists():
        pytest.skip(f"fixtures missing at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def client(server):
    """A client_util.Client on the `server` fixture (rebuild one after server.stop()/start())."""
    from client_util import Client
    return Client(server.url)


@pytest.fixture
def make_server(tmp_path):
    """Starts servers with extra arguments (make_server(args, data_dir=..., verify=...)); stops them after."""
    started = []

    def make(extra_args=(), data_dir=None, verify=True, store_args=None):
        s = Server(data_dir or tmp_path / "data", extra_args, verify, store_args).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


@pytest.fixture
def deltastored_bin():
    return BUILD / "server" / "deltastored"
