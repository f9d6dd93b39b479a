"""The file cache (deltastored --file-cache-gb): a lossless version's files enter it as they are stored,
and a whole-file download rebuilds a file it does not hold once and keeps it, under DATA/file-cache by
its sha256; downloads read from there afterwards; a damaged copy is caught by its checksum before the
last byte and dropped; ranges and the Hugging Face route read the same bytes; deleting the version
removes its copy; turning the cache off empties it; by default it is on, sized from the data dir's disk."""
import hashlib
import os
import re
import subprocess

import requests

from client_util import BUILD, Client, sha256_file

FILE = "model.safetensors"


def cached(data_dir):
    """The sha256 of each entry (entries are named "<sha256 hex>-<XXH3-128 hex>")."""
    d = data_dir / "file-cache"
    return sorted(p.name.split("-")[0] for p in d.iterdir()) if d.exists() else []


def get_all(c, path):
    r = c.get(path)
    assert r.status_code == 200, r.text[:300]
    return r.content


def test_repeated_downloads_come_from_the_cache_and_a_damaged_copy_is_never_served(make_server, fixtures,
                                                                                  tmp_path):
    data = tmp_path / "data"
    srv = make_server(["--file-cache-gb", "1"], data_dir=data)
    c = Client(srv.url)
    src = fixtures / "faceres.bf16.safetensors"
    hexd = sha256_file(src)
    _, v = c.register("m", src)
    path = f"/v1/models/m/versions/{v['digest']}/files/{FILE}"
    assert cached(data) == [hexd]  # stored losslessly: the upload's bytes are the bytes served, linked

    first = get_all(c, path)  # from the cache
    assert hashlib.sha256(first).hexdigest() == hexd
    assert get_all(c, path) == first
    r = c.get(path, headers={"Range": "bytes=100-299"})
    assert r.status_code == 206 and r.content == first[100:300]
    # The Hugging Face route serves the same file through the same cache.
    assert get_all(c, f"/deltastore/m/resolve/main/{FILE}") == first

    # A flipped byte in the cached copy: the download is cut before its last byte, the copy dropped.
    [entry] = (data / "file-cache").glob(hexd + "-*")
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    entry.write_bytes(bytes(raw))
    got = bytearray()
    try:
        with c.s.get(c.url(path), stream=True, timeout=60) as resp:
            assert resp.status_code == 200
            for b in resp.iter_content(1 << 20):
                got += b
    except requests.exceptions.RequestException:
        pass
    assert len(got) < len(first), "a damaged cached copy must not be served whole"
    assert cached(data) == []
    assert get_all(c, path) == first  # rebuilt from the chunks, and kept on the way
    assert cached(data) == [hexd]

    # Deleting the version removes its copy.
    r = c.delete(f"/v1/models/m/versions/{v['digest']}")
    assert r.status_code == 200, r.text
    assert cached(data) == []


def test_turning_the_cache_off_empties_it(make_server, fixtures, tmp_path):
    data = tmp_path / "data"
    srv = make_server(["--file-cache-gb", "1"], data_dir=data)
    c = Client(srv.url)
    _, v = c.register("m", fixtures / "faceres.bf16.safetensors")
    assert len(cached(data)) == 1
    srv.stop()
    srv.extra_args = ["--file-cache-gb", "0"]
    srv.start()
    assert cached(data) == []
    body = get_all(Client(srv.url), f"/v1/models/m/versions/{v['digest']}/files/{FILE}")
    assert hashlib.sha256(body).hexdigest() == sha256_file(fixtures / "faceres.bf16.safetensors")
    assert cached(data) == []


def test_by_default_the_cache_is_on_and_sized_from_the_data_dirs_file_system(make_server, fixtures, tmp_path):
    data = tmp_path / "data"
    srv = make_server([], data_dir=data)
    gb = float(re.search(r"file cache ([0-9.]+) GB", srv.first_line).group(1))
    st = os.statvfs(tmp_path)
    assert 0 < gb <= st.f_blocks * st.f_frsize / 10 / 1e9 + 0.05, srv.first_line
    Client(srv.url).register("m", fixtures / "faceres.bf16.safetensors")
    assert cached(data) == [sha256_file(fixtures / "faceres.bf16.safetensors")]


def test_a_cache_size_that_is_not_a_number_stops_the_start_with_the_reason(tmp_path):
    r = subprocess.run([str(BUILD / "server" / "deltastored"), "--data-dir", str(tmp_path / "d"),
                        "--listen", "127.0.0.1:0", "--file-cache-gb", "lots"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "--file-cache-gb" in r.stderr and "must be auto or a number of GB" in r.stderr, r.stderr
