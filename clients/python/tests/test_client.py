"""deltastore_client.Client against the real server: round trips, progress bars, resumed uploads
(server killed mid-upload, client crashed mid-upload), resumed and parallel downloads."""
import hashlib
import json
import os
import re
import threading

import pytest

from deltastore_client import Client, DeltastoreError

MiB = 1 << 20
BASE = "faceres.bf16.safetensors"
FT = "faceres-deep.bf16.safetensors"


def sha256(path):
    return "sha256:" + hashlib.sha256(open(path, "rb").read()).hexdigest()


class Abort(Exception):
    """Raised from a callback to simulate a client that dies mid-transfer."""


def no_partials(d):
    return [p for p in os.listdir(d) if ".partial" in p]


def register_pair(ds, fixtures):
    base = ds.upload(fixtures / BASE, "faceres", tags=["v1"], progress=False)
    ft = ds.upload(fixtures / FT, "faceres-deep", base="faceres@v1", tags=["v1", "latest"], progress=False)
    return base, ft


def test_roundtrip_with_base(ds, fixtures, tmp_path):
    base, ft = register_pair(ds, fixtures)
    assert base["base"] is None and base["tags"] == ["v1"]
    assert base["files"] == [{"path": BASE, "kind": "safetensors", "size": (fixtures / BASE).stat().st_size,
                              "sha256": sha256(fixtures / BASE)}]
    assert ft["base"] == {"model": "faceres", "digest": base["digest"]}
    assert ft["stats"]["tensors_delta"] > 0 and ft["stored_bytes"] < ft["logical_bytes"]
    assert sorted(ft["tags"]) == ["latest", "v1"]

    out = tmp_path / "out"
    res = ds.download("faceres-deep", "v1", out, progress=False)
    assert res["version"] == ft["digest"]
    (f,) = res["files"]
    assert f["status"] == "downloaded" and f["fetched"] == f["size"]
    assert sha256(out / FT) == sha256(fixtures / FT) == f["sha256"]
    assert no_partials(out) == []

    # A second download finds the verified file and fetches nothing; a bare model means `latest`.
    res = ds.download("faceres-deep", None, out, progress=False)
    assert res["files"][0]["status"] == "present" and res["files"][0]["fetched"] == 0

    # The delta container.
    d = ds.download("faceres-deep", "v1", str(tmp_path / "dsc") + "/", form="delta", progress=False)
    assert d["path"].endswith(".dsc") and os.path.getsize(d["path"]) == d["size"] > 0
    assert d["version"] == ft["digest"]

    # Listing, tags, stats, jobs, deletion.
    assert [m["name"] for m in ds.ls()] == ["faceres", "faceres-deep"]
    assert [v["digest"] for v in ds.versions("faceres-deep")] == [ft["digest"]]
    assert ds.ls("faceres")[0]["digest"] == base["digest"]
    ds.tag("faceres-deep", "prod", "v1")  # a tag is resolved to its digest
    assert ds.tags("faceres-deep")["prod"] == ft["digest"]
    ds.untag("faceres-deep", "prod")
    assert "prod" not in ds.tags("faceres-deep")
    st = ds.stats()
    assert st["models"] == 2 and st["versions"] == 2 and st["stored_bytes"] > 0
    with pytest.raises(DeltastoreError) as ei:
        ds.delete("faceres", "v1")  # the base of faceres-deep
    assert ei.value.status == 409 and ei.value.code == "VERSION_IN_USE"
    assert ds.delete("faceres-deep", "v1")["deleted"] == ft["digest"]
    assert ds.delete("faceres", base["digest"])["deleted"] == base["digest"]
    assert ds.stats()["versions"] == 0

    job = ds.upload(fixtures / BASE, "again", wait=False, progress=False)
    assert ds.wait_job(job["id"], progress=False)["state"] == "succeeded"
    assert ds.job(job["id"])["version"] == base["digest"]  # content addressed


def test_errors_carry_code_and_status(ds, fixtures, tmp_path):
    with pytest.raises(DeltastoreError) as ei:
        ds.download("nosuch", "v1", tmp_path / "x", progress=False)
    assert ei.value.status == 404 and ei.value.code == "MODEL_UNKNOWN" and ei.value.message
    assert "404" in str(ei.value) and "MODEL_UNKNOWN" in str(ei.value)
    with pytest.raises(DeltastoreError) as ei:
        ds.upload(fixtures / FT, "ft", base="nosuch@v1", progress=False)
    assert ei.value.status == 404, ei.value
    # Sealed uploads survive a refused version: the rerun reuses them from the state file.
    up = ds.last_upload[0]
    ds.upload(fixtures / BASE, "faceres", tags=["v1"], progress=False)
    ds.upload(fixtures / FT, "ft", base="faceres@v1", progress=False)
    assert ds.last_upload[0]["reused"] and ds.last_upload[0]["upload"] == up["upload"]
    audit = ds.audit()
    assert {m["model"] for m in audit["models"]} == {"faceres", "ft"}
    assert audit["totals"]["stored_bytes"] == audit["store"]["chunk_bytes"]
    ft_audit = ds.audit(model="ft")
    assert len(ft_audit["versions"]) == 1 and ft_audit["figures"]["same_as_base_bytes"] > 0
    assert [h["event"]["event"] for h in ds.audit_history()] == ["ingest", "ingest"]
    with pytest.raises(DeltastoreError) as ei:
        ds.upload(fixtures / FT, "bad name!", progress=False)
    assert ei.value.status == 400 and ei.value.code == "NAME_INVALID"
    with pytest.raises(DeltastoreError) as ei:
        ds.upload(fixtures / FT, "lossy", base="faceres@v1", policy={"mode": "lossy", "ratio": 0.5},
                  progress=False)
    assert ei.value.status == 400 and ei.value.code == "POLICY_INVALID"


def test_token_is_sent_as_bearer(server):
    c = Client(server.url, token="s3cret", state_file=False)
    try:
        assert c.session.headers["Authorization"] == "Bearer s3cret"
        assert c.stats()["versions"] == 0  # the registry has no auth yet and ignores it
    finally:
        c.close()


def test_progress_bars_on_stderr(ds, fixtures, tmp_path, capsys):
    ds.upload(fixtures / BASE, "faceres", tags=["v1"], piece_size=2 * MiB)
    ds.download("faceres", "v1", tmp_path / "out")
    err = capsys.readouterr().err
    assert re.search(r"upload faceres: +100%\|[^|]+\| [\d.]+M/[\d.]+M", err), err[-2000:]
    assert re.search(r"encode: +100%\|[^|]+\| 128/128", err), err[-2000:]
    assert re.search(r"download faceres: +100%\|", err), err[-2000:]


def test_job_bar_follows_the_planning_phase(capsys):
    """A lossy job with rate allocation counts its tensors twice: "plan" (phase planning) then
    "encode", which starts again from 0. Fed job documents as the server writes them; no server."""
    jobs = iter([
        {"state": "queued", "progress": {"tensors_done": 0, "tensors_total": 0, "bytes_done": 0,
                                         "bytes_total": 0}},
        {"state": "running", "progress": {"phase": "planning", "tensors_done": 64, "tensors_total": 128,
                                          "bytes_done": 1 << 20, "bytes_total": 2 << 20}},
        {"state": "running", "progress": {"phase": "planning", "tensors_done": 128, "tensors_total": 128,
                                          "bytes_done": 2 << 20, "bytes_total": 2 << 20}},
        {"state": "running", "progress": {"phase": "encoding", "tensors_done": 32, "tensors_total": 128,
                                          "bytes_done": 1 << 19, "bytes_total": 2 << 20}},
        {"state": "succeeded", "version": "sha256:" + "0" * 64,
         "progress": {"phase": "encoding", "tensors_done": 128, "tensors_total": 128,
                      "bytes_done": 2 << 20, "bytes_total": 2 << 20}},
    ])
    c = Client("http://127.0.0.1:9", state_file=False)
    try:
        c.job = lambda job_id: next(jobs)
        job = c.wait_job("j1", poll=0, max_poll=0)
    finally:
        c.close()
    assert job["state"] == "succeeded"
    err = capsys.readouterr().err
    assert re.search(r"plan: +100%\|[^|]+\| 128/128", err), err
    assert re.search(r"encode: +100%\|[^|]+\| 128/128", err), err
    assert err.index("plan:") < err.rindex("encode:")


def test_upload_resumes_after_the_server_is_killed(ds, server, fixtures, tmp_path):
    path = fixtures / FT
    size = path.stat().st_size
    events = []
    restarter = []

    def hook(event, _path, offset):
        events.append((event, offset))
        if event == "sent" and offset >= 2 * MiB + MiB // 2 and not restarter:
            server.kill()  # SIGKILL in the middle of a 1 MiB PATCH body
            t = threading.Timer(0.5, server.start)  # back on the same port a moment later
            t.start()
            restarter.append(t)

    v = ds.upload(path, "killed", piece_size=MiB, callback=hook, progress=False)
    restarter[0].join()
    assert server.proc is not None and server.proc.poll() is None
    (info,) = ds.last_upload
    assert info["resumed"], events
    assert all(0 < off < size for off in info["resumed"]), info  # went on, did not start over
    assert ("resumed", info["resumed"][0]) in events
    assert info["digest"] == sha256(path) == v["files"][0]["sha256"]
    ds.download("killed", v["digest"], tmp_path / "out", progress=False)
    assert sha256(tmp_path / "out" / FT) == sha256(path)


def test_upload_resumes_after_the_client_dies(server, fixtures, state_file, tmp_path):
    path = fixtures / FT

    def die(event, _path, offset):
        if event == "committed" and offset >= 3 * MiB:
            raise Abort()

    c1 = Client(server.url, state_file=state_file, backoff=0.1)
    with pytest.raises(Abort):
        c1.upload(path, "crashy", piece_size=MiB, callback=die, progress=False)
    c1.close()
    saved = list(json.loads(state_file.read_text()).values())
    assert len(saved) == 1
    uid = saved[0]["upload"]

    c2 = Client(server.url, state_file=state_file, backoff=0.1)  # "rerun the same command"
    try:
        v = c2.upload(path, "crashy", piece_size=MiB, progress=False)
        (info,) = c2.last_upload
        assert info["upload"] == uid and info["resumed"][0] >= 3 * MiB, info
        assert v["files"][0]["sha256"] == sha256(path)
        assert json.loads(state_file.read_text()) == {}  # the job owns the upload now
    finally:
        c2.close()


def test_download_resumes_from_a_truncated_partial(ds, fixtures, tmp_path):
    ds.upload(fixtures / FT, "m", tags=["v1"], progress=False)
    out = tmp_path / "out"
    size = (fixtures / FT).stat().st_size

    def die(event, _path, offset):
        if event == "received" and offset >= 4 * MiB:
            raise Abort()

    with pytest.raises(Abort):
        ds.download("m", "v1", out, parallel=1, callback=die, progress=False)
    partial = out / (FT + ".partial")
    assert partial.exists() and not (out / FT).exists()
    have = partial.stat().st_size
    assert have >= 4 * MiB
    half = have // 2
    with open(partial, "r+b") as f:  # lose the second half of what was downloaded
        f.truncate(half)

    res = ds.download("m", "v1", out, parallel=1, progress=False)
    (f,) = res["files"]
    assert f["resumed_from"] == half and f["fetched"] == size - half, f
    assert sha256(out / FT) == sha256(fixtures / FT)
    assert no_partials(out) == []


def test_download_with_parallel_ranges(ds, fixtures, tmp_path):
    ds.upload(fixtures / FT, "m", tags=["v1"], progress=False)
    size = (fixtures / FT).stat().st_size
    res = ds.download("m", "v1", tmp_path / "a", parallel=4, min_part_size=MiB, progress=False)
    (f,) = res["files"]
    assert f["parts"] == 4 and f["fetched"] == size
    assert sha256(tmp_path / "a" / FT) == sha256(fixtures / FT)

    # Interrupted while four ranges are in flight, then resumed: only the missing bytes come.
    got = [0]
    lock = threading.Lock()

    def die(event, _path, _offset):
        with lock:
            got[0] += 1
            if got[0] >= 3:
                raise Abort()

    with pytest.raises(Abort):
        ds.download("m", "v1", tmp_path / "b", parallel=4, min_part_size=MiB, callback=die, progress=False)
    assert (tmp_path / "b" / (FT + ".partial.json")).exists()
    res = ds.download("m", "v1", tmp_path / "b", parallel=4, min_part_size=MiB, progress=False)
    (f,) = res["files"]
    assert f["parts"] == 4 and 0 < f["resumed_from"] and f["resumed_from"] + f["fetched"] == size, f
    assert sha256(tmp_path / "b" / FT) == sha256(fixtures / FT)
    assert no_partials(tmp_path / "b") == []


def _shard(src, outdir, n=2):
    """Splits a safetensors file into n shards (+ an index and a config), like a sharded checkpoint."""
    data = src.read_bytes()
    hl = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + hl])
    body = data[8 + hl:]
    meta = header.pop("__metadata__", None)
    names = sorted(header)
    outdir.mkdir(parents=True)
    weight_map = {}
    k = -(-len(names) // n)
    for i in range(n):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        h, parts, off = {}, [], 0
        for name in names[i * k:(i + 1) * k]:
            t = header[name]
            a, b = t["data_offsets"]
            h[name] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + b - a]}
            parts.append(body[a:b])
            off += b - a
            weight_map[name] = fname
        if meta:
            h["__metadata__"] = meta
        hb = json.dumps(h).encode()
        hb += b" " * (-len(hb) % 8)
        (outdir / fname).write_bytes(len(hb).to_bytes(8, "little") + hb + b"".join(parts))
    (outdir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (outdir / "config.json").write_text(json.dumps({"source": src.name}))
    (outdir / ".hidden").write_text("not uploaded")


def test_sharded_checkpoint_directory(ds, fixtures, tmp_path):
    _shard(fixtures / BASE, tmp_path / "base")
    _shard(fixtures / FT, tmp_path / "ft")
    ds.upload(tmp_path / "base", "sharded", tags=["v1"], progress=False)
    v = ds.upload(tmp_path / "ft", "sharded-ft", base="sharded@v1", tags=["v1"], progress=False)
    paths = sorted(f["path"] for f in v["files"])
    assert paths == ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                     "model.safetensors.index.json"]
    assert v["stats"]["tensors_delta"] > 0 and v["stats"]["tensors"] == 128
    res = ds.download("sharded-ft", "v1", tmp_path / "out", progress=False)
    assert len(res["files"]) == 4
    for p in paths:
        assert sha256(tmp_path / "out" / p) == sha256(tmp_path / "ft" / p), p
    assert not (tmp_path / "out" / ".hidden").exists()
    # files= selects: only the shards.
    res = ds.download("sharded-ft", "v1", tmp_path / "only", files=["*.safetensors"], progress=False)
    assert sorted(f["file"] for f in res["files"]) == paths[1:3]
