"""Per-tensor downloads (GET .../files/{path}?tensors=a,b) on the real server: a valid safetensors file
with exactly the asked tensors and their original bytes, rebuilt from only their chunks (the
X-Deltastore-Chunks-Read counter), ETag the sha256 of what is sent, unknown names a 400 that lists them."""
import hashlib

import numpy as np
import pytest
from safetensors.numpy import load, save

from client_util import assert_error

FILE = "model.safetensors"
CHUNK = 4 << 20  # codec/chunk_codec.h kChunkSize


def big_tensors(seed):
    """Three 6 MiB F32 tensors (two chunks each) and two small ones (one chunk each)."""
    rng = np.random.default_rng(seed)
    return {"embed.weight": rng.standard_normal((1536, 1024), dtype=np.float32),
            "layer.0.weight": rng.standard_normal((1536, 1024), dtype=np.float32),
            "layer.0.bias": rng.standard_normal((1024,), dtype=np.float32),
            "layer.1.weight": rng.standard_normal((1536, 1024), dtype=np.float32),
            "norm.weight": rng.standard_normal((1024,), dtype=np.float32)}


@pytest.fixture
def stored(client):
    t = big_tensors(7)
    data = save(t, metadata={"format": "pt"})
    up = client.upload_single(data)
    job = client.create_version("big", [(FILE, up["id"])], tags=["v1"])
    job, _ = client.wait_job(job["id"])
    assert job["state"] == "succeeded", job
    manifest = client.version("big", "v1")["manifest"]
    chunks = {e["name"]: len(e["chunks"]) for e in manifest["files"][0]["tensors"]}
    return t, data, chunks


def fetch(client, names, **kw):
    r = client.get(f"/v1/models/big/versions/v1/files/{FILE}", params={"tensors": ",".join(names)}, **kw)
    return r


@pytest.mark.parametrize("names", [["layer.0.weight"], ["norm.weight", "embed.weight"],
                                   ["layer.1.weight", "layer.0.bias", "layer.1.weight"]])
def test_subset_holds_exactly_the_asked_tensors_from_their_chunks(client, stored, names):
    t, _, chunks = stored
    r = fetch(client, names)
    assert r.status_code == 200, r.text
    body = r.content
    assert r.headers["ETag"] == '"sha256:' + hashlib.sha256(body).hexdigest() + '"'
    assert int(r.headers["Content-Length"]) == len(body)
    got = load(body)
    asked = set(names)
    assert set(got) == asked
    for n in asked:
        assert got[n].dtype == t[n].dtype and got[n].shape == t[n].shape
        assert got[n].tobytes() == t[n].tobytes()
    # The header chunk, then each asked tensor's chunks: nothing else was read.
    assert int(r.headers["X-Deltastore-Chunks-Read"]) == 1 + sum(chunks[n] for n in asked)
    assert int(r.headers["X-Deltastore-Tensors"]) == len(asked)
    assert chunks["embed.weight"] == 2 and chunks["norm.weight"] == 1


def test_subset_etag_range_and_conditional(client, stored):
    r = fetch(client, ["layer.0.bias"])
    etag, body = r.headers["ETag"], r.content
    again = fetch(client, ["layer.0.bias"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    part = fetch(client, ["layer.0.bias"], headers={"Range": "bytes=8-"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 8-{len(body) - 1}/{len(body)}"
    assert part.content == body[8:]
    head = client.head(f"/v1/models/big/versions/v1/files/{FILE}", params={"tensors": "layer.0.bias"})
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(body)
    assert head.headers["ETag"] == etag


def test_unknown_tensor_names_are_a_400_listing_them(client, stored):
    r = fetch(client, ["layer.0.bias", "nope", "also.missing"])
    err = assert_error(r, 400, "TENSOR_UNKNOWN")
    assert err["message"] == f"{FILE} has no tensors nope, also.missing"
    assert_error(fetch(client, [""]), 400, "TENSORS_INVALID")
    r = client.get("/v1/models/big/versions/v1/files/nope.safetensors", params={"tensors": "x"})
    assert_error(r, 404, "FILE_UNKNOWN")


def test_whole_file_download_is_unchanged(client, stored):
    _, data, _ = stored
    r = client.get(f"/v1/models/big/versions/v1/files/{FILE}")
    assert r.status_code == 200 and r.content == data
    assert "X-Deltastore-Chunks-Read" not in r.headers
