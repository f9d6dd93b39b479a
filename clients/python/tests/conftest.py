"""Fixtures: the real deltastored, started the way tests/e2e does it (its Server class and its
`server` and `fixtures` fixtures are reused), and a deltastore_client.Client on it."""
import importlib.util
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
PKG = HERE.parent                      # clients/python
ROOT = PKG.parents[1]                  # the repository
E2E = ROOT / "tests" / "e2e"

sys.path.insert(0, str(E2E))           # e2e's Server.stop imports client_util from there
# This checkout's package first, even where an editable install of another clone is importable.
sys.path.insert(0, str(PKG))

# Loaded under its own name: pytest may also import tests/e2e/conftest.py as `conftest`.
_spec = importlib.util.spec_from_file_location("deltastore_e2e_conftest", E2E / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = e2e
_spec.loader.exec_module(e2e)

pytest_runtest_makereport = e2e.pytest_runtest_makereport  # in CI a skip is a failure
pytest_collectreport = e2e.pytest_collectreport
Server = e2e.Server
server = e2e.server        # fixture: a started Server on a fresh data dir
fixtures = e2e.fixtures    # fixture: ../shared/fixtures (skips when missing)

from deltastore_client import Client  # noqa: E402


@pytest.fixture
def state_file(tmp_path):
    return tmp_path / "cache" / "uploads.json"


@pytest.fixture
def ds(server, state_file):
    """A Client on `server` with a private upload state file and quick retries."""
    c = Client(server.url, state_file=state_file, backoff=0.1, timeout=30)
    yield c
    c.close()  # before the server fixture stops the server (idle keep-alives delay a stop)
