"""Bearer tokens and TLS on the real server: each denial over a socket, the admin commands (offline
`deltastored token` and online /v1/tokens through the CLI), and HTTPS with a self-signed certificate."""
import hashlib
import json
import socket
import ssl
import subprocess
import sys

import pytest
import requests

import stores



@pytest.fixture
def deltastored(deltastored_bin):
    def run(*args):
        store = stores.server_args(args[args.index("--data-dir") + 1]) if "--data-dir" in args else []
        return subprocess.run([str(deltastored_bin), *args, *store], capture_output=True, text=True, timeout=60)
    return run


def cli(server, token, *args, verify=None):
    cmd = [sys.executable, "-m", "deltastore_client", "--url", server.url, "-q"]
    if token:
        cmd += ["--token", token]
    if verify:
        cmd += ["--ca-cert", str(verify)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120)


@pytest.fixture
def admin_token(tmp_path, deltastored):
    """An admin token made offline in a fresh data dir, before the server starts."""
    r = deltastored("--data-dir", str(tmp_path / "data"), "token", "create", "--scope", "admin", "--name", "ops")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("dst_") and len(token) == 4 + 16 + 1 + 64
    assert "not shown again" in r.stderr
    return token


@pytest.fixture
def auth_server(make_server, admin_token):
    return make_server(["--auth"])


def error_code(r):
    return r.json()["errors"][0]["code"]


def test_denials_over_the_socket(auth_server, admin_token):
    url = auth_server.url
    r = requests.get(url + "/v1/models")
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
    assert "Bearer" in r.headers["WWW-Authenticate"]
    r = requests.get(url + "/v1/models", headers={"Authorization": "Bearer dst_0000"})
    assert r.status_code == 401
    assert requests.get(url + "/healthz").status_code == 200

    made = cli(auth_server, admin_token, "token", "create", "--scope", "read", "--name", "deploy")
    assert made.returncode == 0, made.stderr
    read = made.stdout.strip()
    h = {"Authorization": f"Bearer {read}"}
    assert requests.get(url + "/v1/models", headers=h).status_code == 200
    # A refused upload is answered before its body is read, with the reason.
    r = requests.post(url + "/v1/uploads", headers=h, data=b"x" * 100_000)
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert "read scope" in r.json()["errors"][0]["message"]
    assert requests.post(url + "/v1/gc", headers=h).status_code == 403
    # The browser path: Basic credentials carrying the token.
    assert requests.get(url + "/v1/models", auth=("me", read)).status_code == 200

    ls = cli(auth_server, admin_token, "--json", "token", "ls")
    assert ls.returncode == 0, ls.stderr
    listed = json.loads(ls.stdout)
    assert {t["name"] for t in listed} == {"ops", "deploy"}
    assert "secret" not in ls.stdout and read[21:] not in ls.stdout
    read_id = read[4:20]
    denied = cli(auth_server, read, "token", "ls")
    assert denied.returncode == 1 and "DENIED" in denied.stderr
    rv = cli(auth_server, admin_token, "token", "revoke", read_id)
    assert rv.returncode == 0, rv.stderr
    assert requests.get(url + "/v1/models", headers=h).status_code == 401


def test_anonymous_read_and_offline_token_commands(tmp_path, admin_token, deltastored, make_server):
    data = str(tmp_path / "data")
    listed = deltastored("--data-dir", data, "token", "list")
    assert listed.returncode == 0 and "secret" not in listed.stdout
    tid = json.loads(listed.stdout)[0]["id"]
    s = make_server(["--auth", "--anonymous-read"])
    assert requests.get(s.url + "/v1/models").status_code == 200
    r = requests.post(s.url + "/v1/uploads")
    assert r.status_code == 401
    busy = deltastored("--data-dir", data, "token", "list")
    if stores.mode() == "embedded":
        # The data dir is locked while the server runs: the offline command says what to do instead.
        assert busy.returncode == 1 and "/v1/tokens" in busy.stderr
    else:
        # Shared stores have no lock: the command works beside running nodes.
        assert busy.returncode == 0 and json.loads(busy.stdout)[0]["id"] == tid
    s.stop()
    assert deltastored("--data-dir", data, "token", "revoke", tid).returncode == 0
    assert deltastored("--data-dir", data, "token", "revoke", tid).returncode == 1


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {r.stderr}")
    return cert, key


def test_tls_round_trip_and_plain_http_is_refused(tmp_path, certificate, fixtures, make_server):
    cert, key = certificate
    # With a file cache: the download reads the cached file piece by piece (TLS cannot use sendfile).
    s = make_server(["--tls-cert", str(cert), "--tls-key", str(key), "--file-cache-gb", "1"], verify=str(cert))
    assert s.url.startswith("https://")
    # Upload and download a real checkpoint over TLS with the client, verified end to end.
    src = fixtures / "blazeface.f32.safetensors"
    up = cli(s, None, "upload", str(src), "--model", "tls", verify=cert)
    assert up.returncode == 0, up.stderr
    out = tmp_path / "out"
    down = cli(s, None, "download", "tls", str(out), verify=cert)
    assert down.returncode == 0, down.stderr
    assert (out / src.name).read_bytes() == src.read_bytes()
    entries = [p.name.split("-")[0] for p in (s.data_dir / "file-cache").iterdir()]
    assert entries == [hashlib.sha256(src.read_bytes()).hexdigest()]
    # Certificate checks are on: an untrusted client fails, and plain HTTP gets no answer.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(s.url + "/healthz", verify=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{s.port}/healthz", timeout=5)
    # The server speaks TLS 1.2 or later.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(cert))
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_bad_tls_configuration_fails_at_start(tmp_path, certificate, deltastored):
    cert, _ = certificate
    r = deltastored("--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--tls-cert", str(cert),
                    "--tls-key", str(tmp_path / "missing.pem"))
    assert r.returncode == 1 and "cannot load TLS certificate" in r.stderr
    r = deltastored("--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--tls-cert", str(cert))
    assert r.returncode == 2 and "go together" in r.stderr
