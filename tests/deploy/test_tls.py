"""TLS end to end: certificates made by trustme at test time; curl and Python's ssl client."""

import http.client
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from support import Server, raw_request, request, run_cli, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("client@example.org")
    paths = {
        "ca": tmp / "ca.pem",
        "cert": tmp / "server.pem",
        "key": tmp / "server.key",
        "client": tmp / "client.pem",
    }
    ca.cert_pem.write_to_path(paths["ca"])
    server_cert.private_key_pem.write_to_path(paths["key"])
    server_cert.cert_chain_pems[0].write_to_path(paths["cert"])
    for blob in server_cert.cert_chain_pems[1:]:
        blob.write_to_path(paths["cert"], append=True)
    client_cert.private_key_and_cert_chain_pem.write_to_path(paths["client"])
    paths["ca_obj"] = ca
    return paths


def tls_args(pki, *extra):
    return ["--certfile", str(pki["cert"]), "--keyfile", str(pki["key"]), *extra]


def client_context(pki, cert=False, maximum=None):
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if cert:
        context.load_cert_chain(str(pki["client"]))
    if maximum:
        context.maximum_version = maximum
    return context


def https_get(port, context, path="/echo"):
    status, _, body = request(("127.0.0.1", port), path, timeout=10, context=context)
    return status, body


@pytest.mark.parametrize("handshake_now", [False, True])
def test_https_with_python_and_curl(pki, handshake_now):
    extra = ["--do-handshake-on-connect"] if handshake_now else []
    with Server("-w", "2", "-b", "127.0.0.1:0", *tls_args(pki, *extra), "testapp:app") as srv:
        status, body = https_get(srv.port, client_context(pki))
        seen = json.loads(body)
        assert status == 200 and seen["url_scheme"] == "https"
        out = subprocess.run(["curl", "-sS", "--cacert", str(pki["ca"]), f"https://127.0.0.1:{srv.port}/hello"],
                             capture_output=True, timeout=20)
        assert out.returncode == 0 and out.stdout == b"Hello, World!\n", out.stderr


def test_post_body_and_large_file_over_tls(pki, tmp_path):
    data = bytes(range(256)) * 4000
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    with Server("-b", "127.0.0.1:0", *tls_args(pki), "testapp:app") as srv:
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=client_context(pki), timeout=10)
        conn.request("POST", "/echo", body=b"secret body")
        assert json.loads(conn.getresponse().read())["body"] == "secret body"
        conn.close()
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=client_context(pki), timeout=10)
        conn.request("GET", "/file", headers={"X-File": str(blob)})
        assert conn.getresponse().read() == data
        conn.close()


def test_plain_http_to_a_tls_port_does_not_hurt_the_worker(pki):
    with Server("-w", "1", "-b", "127.0.0.1:0", *tls_args(pki), "testapp:app") as srv:
        boots = srv.log.count("Booting worker")
        try:
            reply = raw_request(srv.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        except (ConnectionResetError, AssertionError):
            reply = b""
        assert b"200 OK" not in reply
        assert https_get(srv.port, client_context(pki))[0] == 200
        assert srv.log.count("Booting worker") == boots


def test_client_certificates_required(pki):
    args = tls_args(pki, "--cert-reqs", "2", "--ca-certs", str(pki["ca"]))
    with Server("-b", "127.0.0.1:0", *args, "testapp:app", expect_listen=False) as srv:
        port = int(srv.wait_log(r"Listening at: https://127.0.0.1:(\d+)").group(1))

        def answers_with_a_certificate():
            try:
                return https_get(port, client_context(pki, cert=True))[0] == 200
            except OSError:
                return False
        wait_for(answers_with_a_certificate, 20)
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
            https_get(port, client_context(pki, cert=False))


def test_ssl_version_is_the_minimum(pki):
    with Server("-b", "127.0.0.1:0", *tls_args(pki, "--ssl-version", "TLSv1_3"), "testapp:app") as srv:
        assert https_get(srv.port, client_context(pki))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            https_get(srv.port, client_context(pki, maximum=ssl.TLSVersion.TLSv1_2))


def test_ciphers(pki):
    cipher = "ECDHE-RSA-AES128-GCM-SHA256" if "RSA" in pki["key"].read_text() else "ECDHE-ECDSA-AES128-GCM-SHA256"
    with Server("-b", "127.0.0.1:0", *tls_args(pki, "--ciphers", cipher, "--ssl-version", "TLSv1_2"),
                "testapp:app") as srv:
        context = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.cipher()[0] == cipher


@pytest.mark.parametrize("case", ["missing", "garbage", "encrypted", "key-without-cert", "bad-ciphers"])
def test_bad_tls_settings_are_clear_startup_errors(pki, tmp_path, case):
    if case == "missing":
        args, setting = ["--certfile", str(tmp_path / "nope.pem")], "certfile"
    elif case == "garbage":
        bad = tmp_path / "bad.key"
        bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        args, setting = ["--certfile", str(pki["cert"]), "--keyfile", str(bad)], "keyfile"
    elif case == "encrypted":
        from cryptography.hazmat.primitives import serialization
        key = serialization.load_pem_private_key(pki["key"].read_bytes(), password=None)
        enc = tmp_path / "enc.key"
        enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"secret")))
        args, setting = ["--certfile", str(pki["cert"]), "--keyfile", str(enc)], "password"
    elif case == "key-without-cert":
        args, setting = ["--keyfile", str(pki["key"])], "certfile"
    else:
        args, setting = tls_args(pki, "--ciphers", "NO-SUCH-CIPHER"), "ciphers"
    result = run_cli("-b", "127.0.0.1:0", *args, "testapp:app")
    assert result.returncode == 2, result.stderr
    assert setting in result.stderr and result.stderr.startswith("Error: "), result.stderr
    assert "Booting worker" not in result.stderr + result.stdout
