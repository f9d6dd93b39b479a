"""Version creation errors, listing with pagination, tags, deleting versions and garbage collection."""
import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from client_util import Client, assert_error, digest_of, sha256_file

FILE = "model.safetensors"


def small_checkpoint(path, tensors):
    save_file(tensors, str(path))
    return path


def rand(shape, seed):
    return np.random.default_rng(seed).normal(0, 0.02, size=shape).astype(np.float32)


def versions_count(model_doc):
    """`versions` of a model entry: the number of its versions."""
    v = model_doc["versions"]
    assert isinstance(v, int), model_doc
    return v


def test_unknown_base_is_404(client, tmp_path):
    c = client
    f = small_checkpoint(tmp_path / "a.safetensors", {"layer.weight": rand((8, 8), 1)})
    up = c.upload_single(f)
    r = c.create_version_raw("child", [(FILE, up["id"])], base={"model": "nosuch", "version": "v1"})
    assert_error(r, 404, "MODEL_UNKNOWN")

    # A known base model with an unknown tag or digest.
    c.register("parent", f, tags=["v1"])
    for ref, code in (("v9", "TAG_UNKNOWN"), ("sha256:" + "0" * 64, "VERSION_UNKNOWN")):
        r = c.create_version_raw("child", [(FILE, up["id"])], base={"model": "parent", "version": ref})
        assert_error(r, 404, code)
    # Nothing was created under "child".
    assert_error(c.get("/v1/models/child"), 404, "MODEL_UNKNOWN")


def test_unsealed_or_unknown_upload_is_a_4xx(client, tmp_path):
    c = client
    data = small_checkpoint(tmp_path / "a.safetensors", {"w": rand((4, 4), 2)}).read_bytes()
    uid = c.start_upload()
    c.patch_upload(uid, data, 0)
    r = c.create_version_raw("m", [(FILE, uid)])
    assert_error(r, 409, "UPLOAD_NOT_SEALED")
    # The upload is still usable once sealed.
    assert c.seal_upload(uid, digest_of(data)).status_code == 201

    r = c.create_version_raw("m", [(FILE, "no-such-upload-0000")])
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_malformed_version_requests_are_400(client, tmp_path):
    c = client
    up = c.upload_single(small_checkpoint(tmp_path / "a.safetensors", {"w": rand((4, 4), 3)}))
    url = "/v1/models/m/versions"
    one = [{"path": FILE, "upload": up["id"]}]
    bodies = [
        (b"{not json", "BODY_INVALID"),
        (json.dumps({}).encode(), "BODY_INVALID"),
        (json.dumps([]).encode(), "BODY_INVALID"),
        (json.dumps({"files": []}).encode(), "BODY_INVALID"),
        (json.dumps({"files": [{"path": FILE}]}).encode(), "BODY_INVALID"),
        (json.dumps({"files": one, "policy": {"mode": "telepathic"}}).encode(), "POLICY_INVALID"),
        (json.dumps({"files": one + one}).encode(), "BODY_INVALID"),
        (json.dumps({"files": one, "tags": ["-bad tag"]}).encode(), "NAME_INVALID"),
        (json.dumps({"files": one, "tags": "v1"}).encode(), "BODY_INVALID"),
        (json.dumps({"files": [{"path": "../x", "upload": up["id"]}]}).encode(), "NAME_INVALID"),
    ]
    for body, code in bodies:
        r = c.post(url, data=body, headers={"Content-Type": "application/json"})
        assert_error(r, 400, code)


@pytest.mark.parametrize("name", ["-leading-dash", ".hidden", "_x", "a" * 129, "bad!name", "sp%20ace"],
                         ids=["dash", "dot", "underscore", "too-long", "bang", "space"])
def test_invalid_model_name_is_400(client, tmp_path, name):
    c = client
    up = c.upload_single(small_checkpoint(tmp_path / "a.safetensors", {"w": rand((4, 4), 4)}))
    r = c.create_version_raw(name, [(FILE, up["id"])])
    assert_error(r, 400, "NAME_INVALID")


def test_base_with_other_shapes_is_400(client, tmp_path):
    c = client
    base = small_checkpoint(tmp_path / "base.safetensors",
                            {"layer.weight": rand((16, 8), 5), "layer.bias": rand((16,), 6)})
    ft = small_checkpoint(tmp_path / "ft.safetensors",
                          {"layer.weight": rand((16, 9), 7), "layer.bias": rand((16,), 8)})
    c.register("shapes", base, tags=["v1"])
    up = c.upload_single(ft)
    r = c.create_version_raw("shapes-ft", [(FILE, up["id"])], base={"model": "shapes", "version": "v1"})
    err = assert_error(r, 400, "BASE_MISMATCH")
    assert "layer.weight" in err["message"], err

    # The same tensors with the base's shapes are accepted (the error was about the shapes).
    ok = small_checkpoint(tmp_path / "ok.safetensors",
                          {"layer.weight": rand((16, 8), 9), "layer.bias": rand((16,), 8)})
    up = c.upload_single(ok)
    job = c.create_version("shapes-ft", [(FILE, up["id"])], base={"model": "shapes", "version": "v1"})
    job, _ = c.wait_job(job["id"])
    assert job["state"] == "succeeded", job


def _with_header(header):
    """A safetensors file: `header` (a dict) and as many zero bytes as its largest end offset."""
    text = json.dumps(header).encode()
    end = max((t["data_offsets"][1] for t in header.values() if isinstance(t, dict)), default=0)
    return struct.pack("<Q", len(text)) + text + b"\x00" * end


def hostile_files():
    huge_header = struct.pack("<Q", 2 ** 40) + b"\x7b\x22junk" * 64
    past_eof = json.dumps({"t": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    past_eof = struct.pack("<Q", len(past_eof)) + past_eof + b"\x00" * 16
    not_json = struct.pack("<Q", 10) + b"not json!!" + b"\x00" * 8
    bad_dtype = json.dumps({"t": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}).encode()
    bad_dtype = struct.pack("<Q", len(bad_dtype)) + bad_dtype + b"\x00" * 8
    negative_header = struct.pack("<q", -16) + b"{}" + b"\x00" * 14  # as int64: -16
    header_past_eof = struct.pack("<Q", 4096) + b'{"t": 1}'
    overlapping = _with_header({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})
    reversed_offsets = _with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})
    shape_mismatch = _with_header({"a": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}})
    dtype_mismatch = _with_header({"a": {"dtype": "F64", "shape": [4], "data_offsets": [0, 16]}})
    shape_overflow = _with_header({"a": {"dtype": "F32", "shape": [2 ** 62, 8], "data_offsets": [0, 16]}})
    return {"huge_header_length": huge_header, "negative_header_length": negative_header,
            "header_length_past_eof": header_past_eof, "offsets_past_eof": past_eof,
            "offsets_overlapping": overlapping, "offsets_reversed": reversed_offsets,
            "shape_vs_bytes": shape_mismatch, "dtype_vs_bytes": dtype_mismatch,
            "shape_product_overflow": shape_overflow, "header_not_json": not_json,
            "unknown_dtype": bad_dtype, "truncated": b"\x01\x02\x03"}


def stored_state(c, model, ref, tmp_path):
    """What must not change: a stored version's manifest and the sha256 of its downloaded file."""
    v = c.version(model, ref)
    _, sha = c.download(f"/v1/models/{model}/versions/{ref}/files/{FILE}", tmp_path / "stored.out")
    return v["digest"], json.dumps(v.get("files"), sort_keys=True), sha


@pytest.mark.parametrize("kind", list(hostile_files()))
def test_hostile_safetensors_is_rejected_cleanly(client, kind, tmp_path):
    c = client
    c.register("keep", small_checkpoint(tmp_path / "keep.safetensors", {"w": rand((8, 8), 42)}), tags=["v1"])
    kept = stored_state(c, "keep", "v1", tmp_path)
    up = c.upload_single(hostile_files()[kind])
    before = c.stats()
    r = c.create_version_raw("hostile", [(FILE, up["id"])])
    # Refused at once (the header is read before a job is queued), naming the file as sent.
    err = assert_error(r, 400, "SAFETENSORS_INVALID")
    assert err["message"].startswith(f"{FILE}: safetensors: "), err

    # Nothing was stored, and the server is fine.
    assert c.get("/healthz").status_code == 200
    after = c.stats()
    assert after["versions"] == before["versions"]
    assert after["stored_bytes"] == before["stored_bytes"]
    assert_error(c.get("/v1/models/hostile/versions"), 404, "MODEL_UNKNOWN")
    assert stored_state(c, "keep", "v1", tmp_path) == kept


def test_unknown_job_is_404(client):
    assert_error(client.get("/v1/jobs/no-such-job-0000"), 404, "JOB_UNKNOWN")


def collect_pages(c, url, key, limit=1, max_pages=20):
    items, pages, after = [], 0, None
    while True:
        params = {"limit": limit}
        if after is not None:
            params["after"] = after
        r = c.get(url, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body[key]) <= limit, body
        items.extend(body[key])
        pages += 1
        assert pages <= max_pages, "pagination does not end"
        after = body.get("next")
        if after is None:
            assert "next" in body, body
            return items, pages
        assert body[key], "a page with a next cursor should not be empty"


def test_listing_with_pagination(client, tmp_path):
    c = client
    digests = []
    for i in range(3):
        f = small_checkpoint(tmp_path / f"m{i}.safetensors", {"w": rand((8, 4), 100 + i)})
        _, v = c.register("alpha", f)
        digests.append(v["digest"])
    for name in ("bravo", "charlie"):
        c.register(name, small_checkpoint(tmp_path / f"{name}.safetensors", {"w": rand((4, 4), len(name))}))

    models, pages = collect_pages(c, "/v1/models", "models")
    names = [m["name"] for m in models]
    assert sorted(names) == ["alpha", "bravo", "charlie"]
    assert len(set(names)) == 3
    assert 3 <= pages <= 4
    by_name = {m["name"]: m for m in models}
    assert versions_count(by_name["alpha"]) == 3
    assert versions_count(by_name["bravo"]) == 1
    assert all("created_at" in m for m in models)

    # Everything at once when the page is large enough.
    r = c.get("/v1/models", params={"limit": 10})
    assert r.status_code == 200 and [m["name"] for m in r.json()["models"]] == names
    assert r.json()["next"] is None

    versions, _ = collect_pages(c, "/v1/models/alpha/versions", "versions")
    assert sorted(v["digest"] for v in versions) == sorted(digests)
    assert all(v["model"] == "alpha" and v["base"] is None for v in versions)

    m = c.get("/v1/models/alpha")
    assert m.status_code == 200
    assert m.json()["name"] == "alpha" and versions_count(m.json()) == 3
    assert_error(c.get("/v1/models/nosuch"), 404, "MODEL_UNKNOWN")
    assert_error(c.get("/v1/models/nosuch/versions"), 404, "MODEL_UNKNOWN")


def test_tags(client, tmp_path):
    c = client
    _, v1 = c.register("tagged", small_checkpoint(tmp_path / "1.safetensors", {"w": rand((4, 4), 11)}),
                       tags=["v1"])
    _, v2 = c.register("tagged", small_checkpoint(tmp_path / "2.safetensors", {"w": rand((4, 4), 12)}))
    assert v1["digest"] != v2["digest"]

    r = c.get("/v1/models/tagged/tags")
    assert r.status_code == 200 and r.json() == {"tags": {"v1": v1["digest"]}}

    r = c.put("/v1/models/tagged/tags/prod", json={"version": v2["digest"]})
    assert r.status_code == 200, r.text
    assert c.get("/v1/models/tagged/tags").json()["tags"] == {"v1": v1["digest"], "prod": v2["digest"]}
    assert c.version("tagged", "prod")["digest"] == v2["digest"]
    assert "prod" in c.version("tagged", v2["digest"])["tags"]
    assert c.get("/v1/models/tagged").json()["tags"] == {"v1": v1["digest"], "prod": v2["digest"]}

    # Moving a tag.
    r = c.put("/v1/models/tagged/tags/prod", json={"version": v1["digest"]})
    assert r.status_code == 200, r.text
    assert c.version("tagged", "prod")["digest"] == v1["digest"]

    r = c.delete("/v1/models/tagged/tags/prod")
    assert r.status_code == 204 and r.content == b""
    assert c.get("/v1/models/tagged/tags").json()["tags"] == {"v1": v1["digest"]}
    assert_error(c.get("/v1/models/tagged/versions/prod"), 404, "TAG_UNKNOWN")
    assert_error(c.delete("/v1/models/tagged/tags/prod"), 404, "TAG_UNKNOWN")

    # A tag to a version that does not exist, a bad body, a bad tag name, an unknown model.
    assert_error(c.put("/v1/models/tagged/tags/x", json={"version": "sha256:" + "0" * 64}), 404, "VERSION_UNKNOWN")
    assert_error(c.put("/v1/models/tagged/tags/-x", json={"version": v1["digest"]}), 400, "NAME_INVALID")
    assert_error(c.put("/v1/models/tagged/tags/x", json={"digest": v1["digest"]}), 400, "BODY_INVALID")
    assert_error(c.put("/v1/models/nosuch/tags/x", json={"version": v1["digest"]}), 404, "MODEL_UNKNOWN")


def test_delete_versions_and_gc(server, fixtures, tmp_path):
    c = Client(server.url)
    keep_file = fixtures / "blazeface.f32.safetensors"
    _, keep = c.register("keep", keep_file)
    baseline = c.stats()

    _, base_v = c.register("faceres", fixtures / "faceres.bf16.safetensors", tags=["v1"])
    _, ft_v = c.register("faceres-deep", fixtures / "faceres-deep.bf16.safetensors",
                         base={"model": "faceres", "version": "v1"}, policy={"mode": "lossless"})
    loaded = c.stats()
    assert loaded["stored_bytes"] > baseline["stored_bytes"]
    assert loaded["chunks"] > baseline["chunks"]

    # The base is in use.
    r = c.delete("/v1/models/faceres/versions/v1")
    assert_error(r, 409, "VERSION_IN_USE")
    assert c.version("faceres", "v1")["digest"] == base_v["digest"]
    assert_error(c.delete(f"/v1/models/faceres-deep/versions/sha256:{'1' * 64}"), 404, "VERSION_UNKNOWN")

    r = c.delete(f"/v1/models/faceres-deep/versions/{ft_v['digest']}")
    assert r.status_code == 200, r.text
    d1 = r.json()
    assert d1["deleted"] == ft_v["digest"] and d1["freed_bytes"] > 0  # its own chunks, at once
    r = c.delete("/v1/models/faceres/versions/v1")  # by tag, now that nothing uses it
    assert r.status_code == 200, r.text
    d2 = r.json()
    assert d2["deleted"] == base_v["digest"] and d2["freed_bytes"] > 0
    # Their only versions gone, the models are gone too.
    assert_error(c.get(f"/v1/models/faceres-deep/versions/{ft_v['digest']}"), 404, "MODEL_UNKNOWN")
    assert_error(c.get(f"/v1/models/faceres/versions/{base_v['digest']}"), 404, "MODEL_UNKNOWN")

    r = c.post("/v1/gc")
    assert r.status_code == 200, r.text
    gc = r.json()
    # Deletion released every chunk only these versions held: the collection finds nothing left.
    assert (gc["chunks_deleted"], gc["bytes_freed"]) == (0, 0), gc
    freed = d1["freed_bytes"] + d2["freed_bytes"]
    after = c.stats()
    assert after["stored_bytes"] == baseline["stored_bytes"]
    assert after["chunks"] == baseline["chunks"]
    assert after["versions"] == baseline["versions"]
    assert freed == loaded["stored_bytes"] - baseline["stored_bytes"]

    # A second gc has nothing left to do, and what is still referenced still reads back.
    gc2 = c.post("/v1/gc").json()
    assert (gc2["chunks_deleted"], gc2["bytes_freed"]) == (0, 0), gc2
    _, got = c.download(f"/v1/models/keep/versions/{keep['digest']}/files/{FILE}", tmp_path / "keep")
    assert got == sha256_file(keep_file)
