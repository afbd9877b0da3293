#!/usr/bin/env python3
"""Serves a directory over HTTPS on 127.0.0.1 (or --host: the test node's pod gateway,
10.244.0.1, where pods reach it) for the trust tests, with a CA made on the
spot. Prints one JSON line {"port", "ca"} when ready. Stops by itself when its stdin
closes (the test process died) or after --ttl seconds (default: $MODELGATE_SERVER_TTL,
else 1800).

Paths under /slow/ are served at --slow-rate bytes per second (slow-retrieval attack).
The plain paths ignore Range headers (as many servers do). Under /ranged/ a
`Range: bytes=N-` request gets a 206 from byte N; /flaky/ does the same but cuts the
first answer for each file halfway (a network failure mid-file); /stall/ sends the
first half and then nothing for a minute (a fetch to kill); /changing/ cuts it too and
serves other bytes from then on (a file replaced during the download). Each GET under
those four is logged to ROOT/get-log.jsonl as {"path", "start", "sent"}.
A POST (a webhook gate's call) is answered with the status code written in
ROOT/webhook-status (200 when absent), and its body is appended to
ROOT/webhook-requests.jsonl, so a test can judge a canary and see what it was told.
"""

import argparse
import datetime
import http.server
import ipaddress
import json
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# The test node's bridge address (tests/cluster/node): on this machine, reachable by pods.
POD_GATEWAY = "10.244.0.1"


def make_pki(dir):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelgate trust-test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", POD_GATEWAY)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {n: os.path.join(dir, n) for n in ("ca.crt", "server.crt", "server.key")}
    with open(paths["ca.crt"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.crt"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def main():
    p = argparse.ArgumentParser()
    p.add_argument("root")
    # A benchmark longer than the default sets MODELGATE_SERVER_TTL (tests/bench/soak).
    p.add_argument("--ttl", type=int, default=int(os.environ.get("MODELGATE_SERVER_TTL", "1800")))
    # Bytes a second under /slow/ (a benchmark's trickling repository sets
    # MODELGATE_SLOW_RATE).
    p.add_argument("--slow-rate", type=int, default=int(os.environ.get("MODELGATE_SLOW_RATE", "64")))
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", POD_GATEWAY])
    p.add_argument("--plain", action="store_true", help="plain HTTP (the conformance client only)")
    args = p.parse_args()
    pki_dir = tempfile.mkdtemp(prefix="modelgate-tls-")
    pki = make_pki(pki_dir)

    def stop():
        shutil.rmtree(pki_dir, ignore_errors=True)
        os._exit(0)


    lock = threading.Lock()
    answered = set()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=args.root, **kw)

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with open(os.path.join(args.root, "webhook-requests.jsonl"), "ab") as f:
                f.write(body + b"\n")
            try:
                with open(os.path.join(args.root, "webhook-status")) as f:
                    code = int(f.read().strip())
            except FileNotFoundError:
                code = 200
            reply = f"judged {code}".encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def ranged(self, kind, rest):
            path = self.translate_path("/" + rest)
            if not os.path.isfile(path):
                return self.send_error(404)
            with open(path, "rb") as f:
                data = f.read()
            start = 0
            want = self.headers.get("Range", "")
            if want.startswith("bytes=") and want.endswith("-") and want[6:-1].isdigit():
                start = int(want[6:-1])
            with lock:
                first = path not in answered
                answered.add(path)
            if kind == "changing" and not first:
                data = bytes(b ^ 0x5A for b in data)
            if start >= len(data) and start > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            if start > 0:
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if kind != "ranged" and first:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if kind != "ranged" and first:
                body = body[: len(body) // 2]
            try:
                self.wfile.write(body)
                self.wfile.flush()
                if kind == "stall" and first:
                    time.sleep(60)
            except (BrokenPipeError, ConnectionResetError):
                pass
            with lock, open(os.path.join(args.root, "get-log.jsonl"), "a") as f:
                f.write(json.dumps({"path": rest, "start": start, "sent": len(body)}) + "\n")

        def do_GET(self):
            kind, _, rest = self.path[1:].partition("/")
            if kind in ("ranged", "flaky", "stall", "changing"):
                return self.ranged(kind, rest)
            if not self.path.startswith("/slow/"):
                return super().do_GET()
            path = self.translate_path(self.path[len("/slow"):])
            if not os.path.isfile(path):
                return self.send_error(404)
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for i in range(0, len(data), args.slow_rate):
                    self.wfile.write(data[i:i + args.slow_rate])
                    self.wfile.flush()
                    time.sleep(1)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = http.server.ThreadingHTTPServer((args.host, 0), Handler)
    httpd.daemon_threads = True
    if not args.plain:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["server.crt"], pki["server.key"])
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print(json.dumps({"port": httpd.server_address[1], "ca": pki["ca.crt"]}), flush=True)

    def stop_when_orphaned():
        sys.stdin.read()
        stop()

    threading.Thread(target=stop_when_orphaned, daemon=True).start()
    threading.Timer(args.ttl, stop).start()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
