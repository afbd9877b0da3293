#!/usr/bin/env python3
"""A model repository that changes over time, made with python-tuf, for the rollout
tests and the demo. Keys live in DIR/keys; DIR/root.json is the pin;
DIR/public/{metadata,targets} is all a server publishes.

    modelrepo.py init DIR                 an empty repository (version 1 everywhere)
    modelrepo.py add DIR NAME V1 V2 ...   publish NAME/Vn/model.onnx for each version;
                                          `2.4.0@errors=0.2,latency_ms=300` writes that
                                          behaviour into the model file's header for the
                                          example model server (tests/model-server)
    modelrepo.py shards DIR PREFIX N [BEHAVIOUR]
                                          publish a model of N files under PREFIX
                                          (PREFIXmodel-0000i-of-0000N.safetensors); the
                                          first carries BEHAVIOUR as `add` writes it
    modelrepo.py remove DIR PATH ...      revoke targets (they stay on disk, unsigned)

Each change re-signs targets, snapshot and timestamp with the next versions, as a
publisher's CI would. Prints `PATH sha256` for each target added.
"""

import hashlib
import os
import sys
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import MetaFile, Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

ROLES = ("root", "timestamp", "snapshot", "targets")
SER = JSONSerializer(compact=True)


def expires():
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=7)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def signer(d, role):
    with open(f"{d}/keys/{role}.pem", "rb") as f:
        return CryptoSigner(load_pem_private_key(f.read(), None))


def init(d):
    signers = {r: CryptoSigner.generate_ed25519() for r in ROLES}
    for r, s in signers.items():
        write(f"{d}/keys/{r}.pem", s.private_bytes)
    root = Metadata(Root(expires=expires(), consistent_snapshot=False))
    for r, s in signers.items():
        root.signed.add_key(s.public_key, r)
    root.sign(signers["root"])
    write(f"{d}/root.json", root.to_bytes(SER))
    write(f"{d}/public/metadata/1.root.json", root.to_bytes(SER))
    write(f"{d}/public/metadata/root.json", root.to_bytes(SER))
    publish(d, Metadata(Targets(expires=expires())), 0)


def load(d, role):
    with open(f"{d}/public/metadata/{role}.json", "rb") as f:
        return Metadata.from_bytes(f.read())


def publish(d, targets, snapshot_version):
    """Signs `targets`, then a new snapshot and timestamp that point at it."""
    targets.signed.expires = expires()
    targets.signatures.clear()
    targets.sign(signer(d, "targets"))
    snapshot = Metadata(Snapshot(expires=expires(), version=snapshot_version + 1))
    snapshot.signed.meta["targets.json"] = MetaFile(targets.signed.version)
    snapshot.sign(signer(d, "snapshot"))
    snap = snapshot.to_bytes(SER)
    ts = Metadata(Timestamp(expires=expires(), version=snapshot_version + 1))
    ts.signed.snapshot_meta = MetaFile.from_data(snapshot.signed.version, snap, ["sha256"])
    ts.sign(signer(d, "timestamp"))
    write(f"{d}/public/metadata/targets.json", targets.to_bytes(SER))
    write(f"{d}/public/metadata/snapshot.json", snap)
    write(f"{d}/public/metadata/timestamp.json", ts.to_bytes(SER))


def change(d, edit):
    targets = load(d, "targets")
    edit(targets.signed.targets)
    targets.signed.version += 1
    publish(d, targets, load(d, "snapshot").signed.version)


def add(d, name, versions):
    def edit(targets):
        for spec in versions:
            v, _, behaviour = spec.partition("@")
            sign_file(d, targets, f"{name}/{v}/model.onnx", f"weights of {name} {v}\n".encode() * 4096, behaviour)
    change(d, edit)


def sign_file(d, targets, path, data, behaviour):
    """Publishes `data` as target `path`, with the example server's behaviour header."""
    if behaviour:
        header = "modelgate-example-model\n" + "".join(f"{kv}\n" for kv in behaviour.split(",")) + "\n"
        data = header.encode() + data
    write(f"{d}/public/targets/{path}", data)
    targets[path] = TargetFile.from_data(path, data, ["sha256"])
    print(path, hashlib.sha256(data).hexdigest())


def shards(d, prefix, count, behaviour=""):
    def edit(targets):
        for i in range(count):
            path = f"{prefix}model-{i + 1:05d}-of-{count:05d}.safetensors"
            data = f"shard {i + 1} of {prefix}\n".encode() * 8192
            sign_file(d, targets, path, data, behaviour if i == 0 else "")
    change(d, edit)


def remove(d, paths):
    def edit(targets):
        for p in paths:
            targets.pop(p, None)
    change(d, edit)


if __name__ == "__main__":
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "init":
        init(d)
    elif cmd == "add":
        add(d, sys.argv[3], sys.argv[4:])
    elif cmd == "shards":
        shards(d, sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "")
    elif cmd == "remove":
        remove(d, sys.argv[3:])
    else:
        sys.exit(f"unknown command {cmd}; use init, add, shards or remove")
