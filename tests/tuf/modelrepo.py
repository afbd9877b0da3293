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
    modelrepo.py delegate DIR ROLE PATTERN
                                          delegate the target paths PATTERN matches to
                                          a role of their own (a team's), with its key
    modelrepo.py add-file DIR TARGET FILE sign FILE as target path TARGET (a real model)
    modelrepo.py add-image DIR TARGET FILE REPO
                                          sign the OCI manifest FILE as TARGET, its
                                          custom metadata naming registry repository REPO
    modelrepo.py add-dir DIR PREFIX SRC   sign every file under directory SRC as target
                                          PREFIX + its path below SRC
    modelrepo.py bulk DIR N               N tiny targets bulk/<i>/x.bin: metadata that is
                                          large to download (a benchmark's slow repository)
    modelrepo.py rotate DIR ROLE          a new key for a top-level role (root, targets,
                                          snapshot, timestamp): a new root version,
                                          signed by the old and the new root keys
    modelrepo.py refresh DIR              new snapshot and timestamp versions with fresh
                                          expiry (run it before they expire: 7 days)
    `add`, `add-file`, `shards`, `bulk` and `remove` take `--role ROLE` to sign in that
    delegated role.

Each change re-signs targets, snapshot and timestamp with the next versions, as a
publisher's CI would. Prints `PATH sha256` for each target added.
"""

import hashlib
import os
import sys
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
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


def delegated_roles(targets):
    d = targets.signed.delegations
    return list(d.roles) if d and d.roles else []


def publish(d, targets, snapshot_version, role=None, changed=None, sign_targets=True):
    """Signs `targets` (unless `sign_targets` is False: it is unchanged), and `changed`,
    the new version of delegated role `role`, if any; then a new snapshot and timestamp
    that list every role's version."""
    roles = {"targets": targets}
    for name in delegated_roles(targets):
        roles[name] = changed if name == role else load(d, name)
    for name, md in roles.items():
        if (name == "targets" and sign_targets) or name == role:
            md.signed.expires = expires()
            md.signatures.clear()
            md.sign(signer(d, name))
            write(f"{d}/public/metadata/{name}.json", md.to_bytes(SER))
    snapshot = Metadata(Snapshot(expires=expires(), version=snapshot_version + 1))
    for name, md in roles.items():
        snapshot.signed.meta[f"{name}.json"] = MetaFile(md.signed.version)
    snapshot.sign(signer(d, "snapshot"))
    snap = snapshot.to_bytes(SER)
    ts = Metadata(Timestamp(expires=expires(), version=snapshot_version + 1))
    ts.signed.snapshot_meta = MetaFile.from_data(snapshot.signed.version, snap, ["sha256"])
    ts.sign(signer(d, "timestamp"))
    write(f"{d}/public/metadata/snapshot.json", snap)
    write(f"{d}/public/metadata/timestamp.json", ts.to_bytes(SER))


def change(d, edit, role="targets"):
    """Edits the targets of `role` (top-level or delegated) and publishes a new version."""
    targets = load(d, "targets")
    if role == "targets":
        edit(targets.signed.targets)
        targets.signed.version += 1
        return publish(d, targets, load(d, "snapshot").signed.version)
    if role not in delegated_roles(targets):
        sys.exit(f"no delegated role {role}: run `modelrepo.py delegate` first")
    md = load(d, role)
    edit(md.signed.targets)
    md.signed.version += 1
    publish(d, targets, load(d, "snapshot").signed.version, role, md)


def delegate(d, role, pattern):
    """A new role, with a key of its own, trusted for the paths `pattern` matches."""
    s = CryptoSigner.generate_ed25519()
    write(f"{d}/keys/{role}.pem", s.private_bytes)
    targets = load(d, "targets")
    if targets.signed.delegations is None:
        targets.signed.delegations = Delegations(keys={}, roles={})
    targets.signed.delegations.keys[s.public_key.keyid] = s.public_key
    targets.signed.delegations.roles[role] = DelegatedRole(role, [s.public_key.keyid], 1, False, [pattern])
    md = Metadata(Targets(expires=expires()))
    md.sign(s)
    write(f"{d}/public/metadata/{role}.json", md.to_bytes(SER))
    targets.signed.version += 1
    publish(d, targets, load(d, "snapshot").signed.version)


def add(d, name, versions, role="targets"):
    def edit(targets):
        for spec in versions:
            v, _, behaviour = spec.partition("@")
            sign_file(d, targets, f"{name}/{v}/model.onnx", f"weights of {name} {v}\n".encode() * 4096, behaviour)
    change(d, edit, role)


def sign_file(d, targets, path, data, behaviour):
    """Publishes `data` as target `path`, with the example server's behaviour header."""
    if behaviour:
        header = "modelgate-example-model\n" + "".join(f"{kv}\n" for kv in behaviour.split(",")) + "\n"
        data = header.encode() + data
    write(f"{d}/public/targets/{path}", data)
    targets[path] = TargetFile.from_data(path, data, ["sha256"])
    print(path, hashlib.sha256(data).hexdigest())


def shards(d, prefix, count, behaviour="", role="targets"):
    def edit(targets):
        for i in range(count):
            path = f"{prefix}model-{i + 1:05d}-of-{count:05d}.safetensors"
            data = f"shard {i + 1} of {prefix}\n".encode() * 8192
            sign_file(d, targets, path, data, behaviour if i == 0 else "")
    change(d, edit, role)


def bulk(d, count, role="targets"):
    def edit(targets):
        for i in range(count):
            path = f"bulk/{i}/x.bin"
            data = f"{i}".encode()
            write(f"{d}/public/targets/{path}", data)
            targets[path] = TargetFile.from_data(path, data, ["sha256"])
    change(d, edit, role)


def add_file(d, target, path, role="targets"):
    with open(path, "rb") as f:
        data = f.read()
    change(d, lambda targets: sign_file(d, targets, target, data, ""), role)


def add_image(d, target, path, repository, role="targets"):
    """Publishes an OCI manifest as target `target`, naming its registry repository in
    the target's signed custom metadata (what modelgate pulls the image from)."""
    with open(path, "rb") as f:
        data = f.read()

    def edit(targets):
        sign_file(d, targets, target, data, "")
        targets[target].unrecognized_fields["custom"] = {"oci": {"repository": repository}}
    change(d, edit, role)


def add_dir(d, prefix, src, role="targets"):
    def edit(targets):
        for root, _, files in os.walk(src):
            for name in sorted(files):
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    sign_file(d, targets, prefix + os.path.relpath(path, src), f.read(), "")
    change(d, edit, role)


def refresh(d):
    publish(d, load(d, "targets"), load(d, "snapshot").signed.version, sign_targets=False)


def rotate(d, role):
    if role not in ROLES:
        sys.exit(f"rotate takes a top-level role ({', '.join(ROLES)}); a delegated role's key is its delegator's to change")
    with open(f"{d}/public/metadata/root.json", "rb") as f:
        root = Metadata.from_bytes(f.read())
    old_root = signer(d, "root")
    old = signer(d, role)
    new = CryptoSigner.generate_ed25519()
    root.signed.revoke_key(old.public_key.keyid, role)
    root.signed.add_key(new.public_key, role)
    root.signed.version += 1
    root.signed.expires = expires()
    write(f"{d}/keys/{role}.pem", new.private_bytes)
    root.signatures.clear()
    root.sign(old_root, append=True)
    if role == "root":
        root.sign(new, append=True)
    raw = root.to_bytes(SER)
    write(f"{d}/public/metadata/{root.signed.version}.root.json", raw)
    write(f"{d}/public/metadata/root.json", raw)
    # Whatever the rotated key signed is signed again with the new one.
    targets = load(d, "targets")
    if role == "targets":
        targets.signed.version += 1
    publish(d, targets, load(d, "snapshot").signed.version, sign_targets=role == "targets")


def remove(d, paths, role="targets"):
    def edit(targets):
        for p in paths:
            targets.pop(p, None)
    change(d, edit, role)


if __name__ == "__main__":
    args = sys.argv[1:]
    role = "targets"
    if "--role" in args:
        i = args.index("--role")
        role = args[i + 1]
        del args[i:i + 2]
    cmd, d = args[0], args[1]
    if cmd == "init":
        init(d)
    elif cmd == "add":
        add(d, args[2], args[3:], role)
    elif cmd == "shards":
        shards(d, args[2], int(args[3]), args[4] if len(args) > 4 else "", role)
    elif cmd == "remove":
        remove(d, args[2:], role)
    elif cmd == "add-file":
        add_file(d, args[2], args[3], role)
    elif cmd == "add-image":
        add_image(d, args[2], args[3], args[4], role)
    elif cmd == "add-dir":
        add_dir(d, args[2], args[3], role)
    elif cmd == "refresh":
        refresh(d)
    elif cmd == "rotate":
        rotate(d, args[2])
    elif cmd == "bulk":
        bulk(d, int(args[2]), role)
    elif cmd == "delegate":
        delegate(d, args[2], args[3])
    else:
        sys.exit(f"unknown command {cmd}; use init, add, add-file, add-image, add-dir, shards, bulk, remove, delegate, rotate or refresh")
