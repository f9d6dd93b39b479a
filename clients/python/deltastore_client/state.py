"""The upload state file: upload ids by (registry, file path, size, mtime), so that rerunning an
upload after the client died resumes the server-side upload instead of starting over."""
import contextlib
import json
import os
import pathlib
import time

try:
    import fcntl
except ImportError:  # not POSIX: no lock between concurrent clients
    fcntl = None

MAX_AGE_S = 14 * 24 * 3600


def default_state_file():
    base = os.environ.get("DELTASTORE_CACHE_DIR")
    if base:
        return pathlib.Path(base) / "uploads.json"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
    return root / "deltastore" / "uploads.json"


class UploadState:
    def __init__(self, path):
        self.path = pathlib.Path(path)

    @staticmethod
    def key(url, path, st):
        return json.dumps([url, str(pathlib.Path(path).resolve()), st.st_size, st.st_mtime_ns])

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lk:
            if fcntl is not None:
                fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(lk, fcntl.LOCK_UN)

    def _load(self):
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _store(self, data):
        now = time.time()
        data = {k: v for k, v in data.items()
                if isinstance(v, dict) and now - v.get("at", 0) < MAX_AGE_S}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def get(self, key):
        try:
            entry = self._load().get(key)
        except OSError:
            return None
        return entry.get("upload") if isinstance(entry, dict) else None

    def put(self, key, upload_id):
        try:
            with self._locked():
                data = self._load()
                data[key] = {"upload": upload_id, "at": time.time()}
                self._store(data)
        except OSError:
            pass  # an unwritable cache only costs the resume after a crash

    def remove(self, keys):
        keys = list(keys)
        if not keys:
            return
        try:
            with self._locked():
                data = self._load()
                for k in keys:
                    data.pop(k, None)
                self._store(data)
        except OSError:
            pass
