"""Where the e2e servers keep their data: the embedded RocksDB (the default), or, with
DS_E2E_STORES=servers, a real PostgreSQL (metadata) and a real SeaweedFS S3 server (chunks), started once
per pytest session by tests/tools/{pg,s3}_server.sh on free ports and stopped at its end. Each data dir
gets its own database and bucket prefix, so a server restarted on the same data dir finds its models."""
import atexit
import os
import pathlib
import socket
import subprocess
import tempfile
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tests" / "tools"


def mode():
    return os.environ.get("DS_E2E_STORES", "embedded")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExternalStores:
    """One PostgreSQL and one SeaweedFS for the whole session."""

    def __init__(self):
        # The test server's credentials (tests/tools/s3_server.sh), for every deltastored started.
        os.environ["AWS_ACCESS_KEY_ID"] = "deltastore-test"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "deltastore-test-secret"
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="deltastore_e2e_stores_"))
        os.chmod(self.dir, 0o755)
        self.pg_dir = self.dir / "pg"
        self.s3_dir = self.dir / "s3"
        self.pg_url = self._start_pg()
        self.s3_endpoint = self._start_s3()
        self.count = 0
        self.by_data_dir = {}
        atexit.register(self.stop)

    def _start_pg(self):
        return subprocess.run([str(TOOLS / "pg_server.sh"), "start", str(self.pg_dir)],
                              check=True, capture_output=True, text=True).stdout.strip()

    def _start_s3(self):
        return subprocess.run([str(TOOLS / "s3_server.sh"), "start", str(self.s3_dir)],
                              check=True, capture_output=True, text=True).stdout.strip()

    def restart_pg(self):
        """Starts the PostgreSQL server again (same port, same data) after a stop or kill."""
        subprocess.run([str(TOOLS / "pg_server.sh"), "start", str(self.pg_dir)], check=True,
                       capture_output=True)

    def restart_s3(self):
        """Starts the S3 server again (same port, same data) after a stop or kill."""
        subprocess.run([str(TOOLS / "s3_server.sh"), "start", str(self.s3_dir)], check=True,
                       capture_output=True)

    def args_for(self, data_dir):
        """--meta-store and --chunk-store of a server on `data_dir` (the same ones on every restart)."""
        key = str(pathlib.Path(data_dir).resolve())
        if key not in self.by_data_dir:
            self.count += 1
            db = f"e2e{self.count}"
            subprocess.run(["psql", "-q", self.pg_url, "-c", f"CREATE DATABASE {db}"], check=True,
                           capture_output=True)
            meta = self.pg_url.rsplit("/", 1)[0] + "/" + db
            chunks = f"s3://deltastore/e2e{self.count}?endpoint={urllib.parse.quote(self.s3_endpoint, safe='')}"
            self.by_data_dir[key] = ["--meta-store", meta, "--chunk-store", chunks]
        return self.by_data_dir[key]

    def stop(self):
        subprocess.run([str(TOOLS / "pg_server.sh"), "stop", str(self.pg_dir)], capture_output=True)
        subprocess.run([str(TOOLS / "s3_server.sh"), "stop", str(self.s3_dir)], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.dir)])


_external = None


def server_args(data_dir):
    """The store arguments of a deltastored on `data_dir` in this session's mode."""
    global _external
    if mode() != "servers":
        return []
    return external().args_for(data_dir)


def external():
    """This session's PostgreSQL and SeaweedFS (started on first use, whatever the mode)."""
    global _external
    if _external is None:
        _external = ExternalStores()
    return _external
