"""Downloads (`Client.download`, `download_tensors`): whole files resumed from a `.partial` file, large
ones as parallel byte ranges, moved into place only once their sha256 matches the version's record;
tensor subsets; the compressed container."""
import fnmatch
import hashlib
import json
import os
import pathlib
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import requests
from tqdm import tqdm

from ._common import MiB, NETWORK_ERRORS, RETRY_STATUSES, _q, _unlink, sha256_file
from .errors import ConnectionFailed, DeltastoreError, DigestMismatch


class _Downloads:
    """The download methods of `Client` (a mixin: they use its session, retries and metadata calls)."""

    def download(self, model, ref=None, dest=".", form="checkpoint", files=None, parallel=4,
                 progress=True, min_part_size=16 * MiB, callback=None, max_attempts=10):
        """Downloads a version.

        ref: a tag or digest; None means the tag `latest`, or the newest version without one.
        form="checkpoint": every file of the version (or those matching `files`) into the directory
        `dest`, each through `<file>.partial` (resumed with Range when it exists; files of at least
        2*min_part_size are fetched as up to `parallel` ranges at once) and renamed only once its
        sha256 equals the version's record. Returns {"model","version","dest","files":[...]}.
        form="delta": the compressed container (`/delta`) to `dest` (a file, or a directory to put
        `<model>-<digest12>.dsc` in). callback(event, path, offset) sees "received" events.
        """
        if ref is None:
            ref = self.default_ref(model)
        if form == "delta":
            return self._download_delta(model, ref, dest, progress)
        if form != "checkpoint":
            raise ValueError(f"form must be 'checkpoint' or 'delta', not {form!r}")
        summary = self.version(model, ref)
        digest = summary["digest"]
        entries = summary.get("files") or []
        if files:
            pats = [files] if isinstance(files, str) else list(files)
            entries = [e for e in entries if any(fnmatch.fnmatch(e["path"], p) for p in pats)]
            if not entries:
                raise DeltastoreError(f"{model}@{ref} has no file matching {pats}", code="FILE_UNKNOWN")
        dest = pathlib.Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=sum(int(e["size"]) for e in entries), unit="B", unit_scale=True,
                   unit_divisor=1024, desc=f"download {model}", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        results = []
        try:
            for e in entries:
                results.append(self._download_file(model, digest, e, dest, parallel, min_part_size,
                                                   bar, callback, max_attempts))
        finally:
            bar.close()
        return {"model": model, "version": digest, "dest": str(dest), "files": results}

    def _download_file(self, model, version, entry, dest, parallel, min_part_size, bar, callback,
                       max_attempts):
        vpath, size, expected = entry["path"], int(entry["size"]), entry["sha256"]
        rel = pathlib.PurePosixPath(vpath)
        if rel.is_absolute() or ".." in rel.parts:
            raise DeltastoreError(f"refusing the file path {vpath!r}", code="PATH_INVALID")
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        result = {"file": vpath, "path": str(target), "size": size, "sha256": expected,
                  "status": "downloaded", "resumed_from": 0, "fetched": 0, "parts": 0}
        if target.exists() and target.stat().st_size == size and sha256_file(target) == expected:
            bar.update(size)
            result["status"] = "present"
            return result
        partial = target.with_name(target.name + ".partial")
        statef = target.with_name(target.name + ".partial.json")
        url = f"{self.url}/v1/models/{_q(model)}/versions/{_q(version)}/files/{quote(vpath, safe='/')}"

        for round_ in range(2):  # a second round from scratch when the first one's bytes are wrong
            parts = self._plan_parts(partial, statef, size, expected, parallel, min_part_size)
            have = sum(p[2] for p in parts)
            result["resumed_from"] = have
            result["parts"] = len(parts)
            bar.update(have)
            fetched = self._fetch_parts(url, vpath, partial, statef, parts, size, expected, version,
                                        bar, callback, max_attempts, parallel)
            result["fetched"] += fetched
            got = sha256_file(partial)
            if got == expected:
                os.replace(partial, target)
                _unlink(statef)
                return result
            _unlink(partial)
            _unlink(statef)
            bar.update(-size)
            if round_ == 1:
                raise DigestMismatch(f"{vpath}: downloaded bytes have {got}, the version records "
                                     f"{expected}", code="DIGEST_MISMATCH")
        raise AssertionError("unreachable")

    @staticmethod
    def _plan_parts(partial, statef, size, expected, parallel, min_part_size):
        """[[start, end, done]] for a file: the saved plan clamped to what the .partial holds, or a
        fresh split (an existing .partial without a plan counts as a prefix)."""
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            os.truncate(partial, size)
            have = size
        parts = None
        if partial.exists() and statef.exists():
            try:
                st = json.loads(statef.read_text())
                if st.get("sha256") == expected and st.get("size") == size:
                    parts = [[int(a), int(b), int(d)] for a, b, d in st["parts"]]
            except (ValueError, KeyError, TypeError):
                parts = None
        if parts is not None:
            for p in parts:  # a truncated .partial loses what lay past its end
                p[2] = max(0, min(p[2], p[1] - p[0], have - p[0]))
            return parts
        prefix = min(have, size) if partial.exists() else 0
        if not partial.exists():
            partial.touch()
        rest = size - prefix
        k = max(1, min(int(parallel or 1), rest // max(1, min_part_size)))
        parts = [[0, prefix, prefix]] if prefix else []
        step = -(-rest // k) if rest else 0
        for i in range(k):
            a = prefix + i * step
            b = min(size, a + step)
            if b > a:
                parts.append([a, b, 0])
        return parts or [[0, 0, 0]]

    def _fetch_parts(self, url, vpath, partial, statef, parts, size, expected, version, bar, callback,
                     max_attempts, parallel):
        todo = [p for p in parts if p[0] + p[2] < p[1]]
        lock = threading.Lock()
        stop = threading.Event()
        fetched = [0]
        unsaved = [0]
        cb = callback or (lambda *a: None)

        def save():
            tmp = statef.with_name(statef.name + ".tmp")
            tmp.write_text(json.dumps({"sha256": expected, "size": size, "version": version,
                                       "parts": parts}))
            os.replace(tmp, statef)

        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            def worker(part):
                session = self._new_session()
                attempts = 0
                try:
                    while part[0] + part[2] < part[1] and not stop.is_set():
                        pos, end = part[0] + part[2], part[1]
                        try:
                            r = session.get(url, headers={"Range": f"bytes={pos}-{end - 1}"},
                                            stream=True, timeout=self.timeout)
                            with r:
                                if _range_ignored(r, vpath, pos, end, size):  # take it from 0
                                    with lock:
                                        bar.update(-part[2])
                                        part[2] = 0
                                    pos = part[0]
                                    if pos != 0:
                                        raise DeltastoreError(f"{vpath}: the server does not "
                                                              "answer byte ranges", code="RANGE_UNSUPPORTED")
                                _check_etag(r, vpath, expected)
                                for chunk in r.iter_content(1 * MiB):
                                    if stop.is_set():
                                        return
                                    chunk = chunk[:end - pos]
                                    if not chunk:
                                        break
                                    os.pwrite(fd, chunk, pos)
                                    pos += len(chunk)
                                    with lock:
                                        part[2] = pos - part[0]
                                        fetched[0] += len(chunk)
                                        unsaved[0] += len(chunk)
                                        bar.update(len(chunk))
                                        if unsaved[0] >= 4 * MiB:
                                            save()
                                            unsaved[0] = 0
                                    attempts = 0
                                    cb("received", vpath, pos)
                                    if pos >= end:
                                        break
                        except NETWORK_ERRORS as e:
                            attempts += 1
                            if attempts > max_attempts:
                                raise ConnectionFailed(f"downloading {vpath} failed {attempts} times in "
                                                       f"a row at byte {pos}: {e}", code="UNREACHABLE") from e
                            self._sleep_backoff(min(attempts - 1, 5))
                finally:
                    session.close()

            try:
                if len(todo) <= 1 or parallel <= 1:
                    for p in todo:
                        worker(p)
                else:
                    with ThreadPoolExecutor(max_workers=min(parallel, len(todo))) as pool:
                        futures = [pool.submit(worker, p) for p in todo]
                        first = None
                        for fut in futures:
                            try:
                                fut.result()
                            except BaseException as e:  # noqa: B902 - stop the others, re-raise
                                stop.set()
                                first = first or e
                        if first is not None:
                            raise first
            finally:
                with lock:
                    os.fsync(fd)
                    save()
        finally:
            os.close(fd)
        return fetched[0]

    def download_tensors(self, model, ref, tensors, dest, file=None, progress=False):
        """Downloads only some tensors: for each safetensors file holding some of `tensors`, a valid
        safetensors file with just those (GET .../files/{path}?tensors=a,b), rebuilt by the registry
        from their chunks alone, checked against its ETag (the sha256 of what was sent).

        ref: a tag or digest (None: the tag `latest`, else the newest version). file: the file to
        take them from (default: found in the version's manifest, across shards). dest: a file path
        when one file results, else a directory (each result under the file's own path). Unknown
        names raise DeltastoreError TENSOR_UNKNOWN listing them. Returns {"model","version",
        "files":[{"file","path","tensors","size","sha256","chunks_read","stored_bytes_read"}]}.
        """
        names = [tensors] if isinstance(tensors, str) else list(dict.fromkeys(tensors))
        if not names or any(not n or "," in n for n in names):
            raise ValueError("tensors must be non-empty names without commas")
        if ref is None:
            ref = self.default_ref(model)
        summary = self._json("GET", f"/v1/models/{_q(model)}/versions/{_q(ref)}")
        digest = summary["digest"]
        groups = {}
        if file is not None:
            groups[file] = names
        else:
            owner = {}
            for f in (summary.get("manifest") or {}).get("files") or []:
                for t in f.get("tensors") or []:
                    owner.setdefault(t["name"], f["path"])
            unknown = [n for n in names if n not in owner]
            if unknown:
                raise DeltastoreError(f"{model}@{ref} has no tensor{'s' if len(unknown) > 1 else ''} "
                                      + ", ".join(unknown), code="TENSOR_UNKNOWN")
            for n in names:
                groups.setdefault(owner[n], []).append(n)
        dest = pathlib.Path(dest)
        results = []
        for vpath, group in groups.items():
            rel = pathlib.PurePosixPath(vpath)
            if rel.is_absolute() or ".." in rel.parts:
                raise DeltastoreError(f"refusing the file path {vpath!r}", code="PATH_INVALID")
            target = dest.joinpath(*rel.parts) if (len(groups) > 1 or dest.is_dir()) else dest
            results.append(self._download_subset(model, digest, vpath, group, target, progress))
        return {"model": model, "version": digest, "files": results}

    def _download_subset(self, model, version, vpath, names, target, progress):
        url = f"/v1/models/{_q(model)}/versions/{_q(version)}/files/{quote(vpath, safe='/')}"
        r = self.request("GET", url, params={"tensors": ",".join(names)}, stream=True,
                         context=f"downloading tensors of {model}@{version[:19]} {vpath}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        h = hashlib.sha256()
        n = 0
        with r:
            etag = r.headers.get("ETag", "").strip()
            etag = (etag[2:] if etag.startswith("W/") else etag).strip('"')
            total = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"tensors {vpath}",
                      disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar, \
                    open(partial, "wb") as f:
                try:
                    for chunk in r.iter_content(1 * MiB):
                        f.write(chunk)
                        h.update(chunk)
                        n += len(chunk)
                        bar.update(len(chunk))
                except NETWORK_ERRORS as e:
                    raise ConnectionFailed(f"the tensor download of {vpath} broke off at byte {n}: {e}",
                                           code="UNREACHABLE") from e
        got = "sha256:" + h.hexdigest()
        if (total is not None and n != total) or (etag and got != etag):
            partial.unlink(missing_ok=True)
            raise DigestMismatch(f"tensors of {vpath}: got {n} bytes with {got}, expected "
                                 f"{total} bytes with {etag}", code="DIGEST_MISMATCH")
        os.replace(partial, target)
        return {"file": vpath, "path": str(target), "tensors": names, "size": n, "sha256": got,
                "chunks_read": int(r.headers.get("X-Deltastore-Chunks-Read", -1)),
                "stored_bytes_read": int(r.headers.get("X-Deltastore-Stored-Bytes-Read", -1))}

    def _download_delta(self, model, ref, dest, progress):
        as_dir = str(dest).endswith(("/", os.sep))
        dest = pathlib.Path(dest)
        r = self.request("GET", f"/v1/models/{_q(model)}/versions/{_q(ref)}/delta", stream=True,
                         context=f"downloading the delta of {model}@{ref}")
        with r:
            version = r.headers.get("ETag", "").strip('"') or None
            if as_dir or dest.is_dir():
                m = re.search(r'filename="([^"/\\]+)"', r.headers.get("Content-Disposition", ""))
                name = m.group(1) if m else f"{model}-{(version or 'sha256:unknown')[7:19]}.dsc"
                dest.mkdir(parents=True, exist_ok=True)
                dest = dest / name
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
            total = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
            partial = dest.with_name(dest.name + ".partial")
            n = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"delta {model}",
                      disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar, \
                    open(partial, "wb") as f:
                try:
                    for chunk in r.iter_content(1 * MiB):
                        f.write(chunk)
                        n += len(chunk)
                        bar.update(len(chunk))
                except NETWORK_ERRORS as e:
                    raise ConnectionFailed(f"the delta download of {model}@{ref} broke off at byte {n}: {e}",
                                           code="UNREACHABLE") from e
            if total is not None and n != total:
                raise DeltastoreError(f"delta of {model}@{ref}: got {n} of {total} bytes", code="SHORT_READ")
            os.replace(partial, dest)
        return {"model": model, "version": version, "path": str(dest), "size": n}


def _range_ignored(r, vpath, pos, end, size):
    """Checks the answer to a GET of bytes pos..end-1 (raises on errors); True when the server
    answered the whole file (200) to a request from a later position."""
    if r.status_code in RETRY_STATUSES:
        raise requests.ConnectionError(f"HTTP {r.status_code}")
    if r.status_code == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+)", r.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != pos or int(m.group(3)) != size:
            raise DeltastoreError(f"{vpath}: asked bytes {pos}-{end - 1}, got "
                                  f"{r.headers.get('Content-Range')!r}", code="RANGE_MISMATCH")
        return False
    if r.status_code == 200:
        return pos != 0
    raise DeltastoreError.from_response(r, f"downloading {vpath}")


def _check_etag(r, vpath, expected):
    etag = r.headers.get("ETag", "").strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    if etag and etag.strip('"') != expected:
        raise DigestMismatch(f"{vpath}: the server sends ETag {etag}, the "
                             f"version records {expected}", code="ETAG_MISMATCH")
