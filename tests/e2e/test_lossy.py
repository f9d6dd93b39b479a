"""Lossy versions end to end: upload with a lossy policy, download the checkpoint, and check its
errors against the quality report the registry stored with the version."""
import numpy as np
from safetensors.numpy import load_file

from client_util import assert_error


def _rel(a, b):
    n = np.linalg.norm(b)
    return float(np.linalg.norm(a) / n) if n > 0 else 0.0


def test_lossy_version_matches_its_quality_report(client, fixtures, tmp_path):
    base_path = fixtures / "faceres.f32.safetensors"
    ft_path = fixtures / "faceres-deep.f32.safetensors"
    client.register("faceres32", base_path, tags=["v1"])
    policy = {"mode": "lossy", "ratio": 16}
    job, version = client.register("deep32-lossy", ft_path, base={"model": "faceres32", "version": "v1"},
                                   policy=policy, tags=["latest"])
    assert version["mode"] == "lossy"
    assert client.get("/readyz").json()["compute_device"] in ("cpu", "cuda:0")  # the backend is loaded now
    q = version["quality"]
    assert q["tensors_lossy"] > 0 and q["tensors"], q
    assert q["lossy_ratio"] >= 16 * 0.9, q  # small tensors may overshoot their share; the total holds
    # Codec-chosen deltadq parameters: the shares come from model-level rate allocation, planned before
    # the tensors were encoded (the finished job's last progress report is the encoding phase's).
    assert q["policy"]["allocate"] is True, q["policy"]
    assert job["progress"]["phase"] == "encoding", job
    multipliers = (0.25, 0.5, 0.71, 1.0, 1.41, 2.0, 4.0)
    for t in q["tensors"]:
        assert any(abs(t["target_ratio"] - 16 / m) < 1e-9 for m in multipliers), t
        assert t["scale"] in ("tensor", "row"), t
        assert isinstance(t["rank"], int) and t["rank"] <= 256, t
        assert t["estimator"] in ("ecsq", "dropout", "lowrank+dropout"), t  # faceres has no embedding
        assert (t["rank"] > 0) == (t["estimator"] == "lowrank+dropout"), t
    # The download is a valid safetensors file with the same names, dtypes and shapes.
    out = tmp_path / "rebuilt.safetensors"
    client.download("/v1/models/deep32-lossy/versions/latest/files/model.safetensors", out)
    rebuilt, base, ft = load_file(out), load_file(base_path), load_file(ft_path)
    assert rebuilt.keys() == ft.keys()
    rng = np.random.default_rng(0)
    for t in q["tensors"]:
        name = t["name"]
        w_hat, w_b, w_f = (x[name].astype(np.float64) for x in (rebuilt, base, ft))
        assert w_hat.shape == w_f.shape
        rows = w_f.shape[0]
        delta = (w_f - w_b).reshape(rows, -1)
        err = (w_f - w_hat).reshape(rows, -1)
        # Weight error is a property of the stored bytes: it must match the report exactly.
        assert abs(_rel(err, delta) - t["weight_error"]) <= 1e-4 * max(1.0, t["weight_error"]), t
        # Output error on independent random inputs agrees with the report's (its own seeded inputs).
        x = rng.standard_normal((delta.shape[1], max(256, 8192 // rows)))
        ours = _rel(err @ x, delta @ x)
        assert abs(ours - t["output_error"]) <= 0.15 * t["output_error"] + 0.02, (name, ours, t)
    # Tensors not stored lossily come back exactly.
    lossy_names = {t["name"] for t in q["tensors"]}
    for name in ft:
        if name not in lossy_names:
            assert np.array_equal(rebuilt[name], ft[name]), name
    # The served file's digest is the rebuilt file's, and the job reported it.
    summary_file = version["files"][0]
    assert summary_file["sha256"] != "sha256:" + __import__("hashlib").sha256(ft_path.read_bytes()).hexdigest()


def test_lossy_policy_errors_are_clear(client, fixtures):
    client.register("blz", fixtures / "blazeface.f32.safetensors", tags=["v1"])
    up = client.upload_single(fixtures / "blazeface-back.f32.safetensors")
    files = [{"path": "model.safetensors", "upload": up["id"]}]
    base = {"model": "blz", "version": "v1"}
    for policy, code in [
        ({"mode": "lossy", "ratio": 0.5}, "POLICY_INVALID"),
        ({"mode": "lossy", "method": "magic"}, "POLICY_INVALID"),
        ({"mode": "lossy", "bits": 12}, "POLICY_INVALID"),
        ({"mode": "lossy", "group": 64, "keep": 65}, "POLICY_INVALID"),
        ({"mode": "lossy", "wat": 1}, "POLICY_INVALID"),
        ({"mode": "lossless", "ratio": 16}, "POLICY_INVALID"),
        ({"mode": "lossy", "rank": 257}, "POLICY_INVALID"),
        ({"mode": "lossy", "rank": "4"}, "POLICY_INVALID"),
        ({"mode": "lossy", "method": "dare", "rank": 2}, "POLICY_INVALID"),
        ({"mode": "lossy", "allocate": "yes"}, "POLICY_INVALID"),
        ({"mode": "lossy", "allocate": True, "bits": 2}, "POLICY_INVALID"),
        ({"mode": "lossy", "allocate": True, "rank": 4}, "POLICY_INVALID"),
    ]:
        r = client.post("/v1/models/blz2/versions", json={"files": files, "base": base, "policy": policy})
        assert_error(r, 400, code)
    r = client.post("/v1/models/blz2/versions", json={"files": files, "policy": {"mode": "lossy"}})
    assert_error(r, 400, "POLICY_INVALID")
