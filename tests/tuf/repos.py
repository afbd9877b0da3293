#!/usr/bin/env python3
"""Repositories for the benchmarks and the demo, made with python-tuf.

    repos.py big OUT SIZE_MIB      one target `big.bin` of SIZE_MIB MiB
    repos.py models OUT NAME V1 V2 ...
                                   one model file per version: NAME/Vn/model.onnx
    repos.py sharded OUT PREFIX FILES SIZE_MIB BINS
                                   a model of FILES files (PREFIXmodel-0000i-of-N.bin,
                                   SIZE_MIB MiB in all, plus PREFIXconfig.json) in BINS
                                   hashed-bin delegations, with a decoy the bins do not
                                   trust and PREFIX-free neighbours; prints the files
    repos.py delegated OUT ROLES TARGETS
                                   TARGETS targets spread over ROLES delegated roles
                                   (`team-NN/*`), each role signed by its own key
Writes OUT/root.json, OUT/metadata/, OUT/targets/ and prints the target to fetch.
"""

import os
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import DelegatedRole, Delegations, MetaFile, Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

EXPIRES = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=7)
SER = JSONSerializer(compact=True)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def publish(out, targets, delegated, bins=None):
    keys = {r: CryptoSigner.generate_ed25519() for r in ("root", "timestamp", "snapshot", "targets")}
    root = Metadata(Root(expires=EXPIRES, consistent_snapshot=False))
    for r, s in keys.items():
        root.signed.add_key(s.public_key, r)
    root.sign(keys["root"])
    top = Metadata(Targets(expires=EXPIRES))
    top.signed.targets = targets
    snapshot = Metadata(Snapshot(expires=EXPIRES))
    if delegated:
        top.signed.delegations = Delegations(keys={}, roles={})
        for name, (signer, files) in delegated.items():
            top.signed.delegations.keys[signer.public_key.keyid] = signer.public_key
            top.signed.delegations.roles[name] = DelegatedRole(name, [signer.public_key.keyid], 1, False, [f"{name}/*"])
            md = Metadata(Targets(expires=EXPIRES))
            md.signed.targets = files
            md.sign(signer)
            write(f"{out}/metadata/{name}.json", md.to_bytes(SER))
            snapshot.signed.meta[f"{name}.json"] = MetaFile(1)
    if bins:
        # python-tuf's hashed bins: role i trusts the target names whose sha256 starts
        # with its hex prefixes; each bin has its own key.
        top.signed.delegations = Delegations(keys={}, roles={})
        width = len(f"{len(bins) - 1:x}")
        for i, (signer, files) in enumerate(bins):
            name = f"bin-{i:0{width}x}"
            top.signed.delegations.keys[signer.public_key.keyid] = signer.public_key
            top.signed.delegations.roles[name] = DelegatedRole(
                name, [signer.public_key.keyid], 1, False, path_hash_prefixes=[f"{i:0{width}x}"])
            md = Metadata(Targets(expires=EXPIRES))
            md.signed.targets = files
            md.sign(signer)
            write(f"{out}/metadata/{name}.json", md.to_bytes(SER))
            snapshot.signed.meta[f"{name}.json"] = MetaFile(1)
    top.sign(keys["targets"])
    snapshot.sign(keys["snapshot"])
    ts = Metadata(Timestamp(expires=EXPIRES))
    snap = snapshot.to_bytes(SER)
    ts.signed.snapshot_meta = MetaFile.from_data(1, snap, ["sha256"])
    ts.sign(keys["timestamp"])
    write(f"{out}/root.json", root.to_bytes(SER))
    write(f"{out}/metadata/1.root.json", root.to_bytes(SER))
    write(f"{out}/metadata/targets.json", top.to_bytes(SER))
    write(f"{out}/metadata/snapshot.json", snap)
    write(f"{out}/metadata/timestamp.json", ts.to_bytes(SER))


def big(out, size_mib):
    path = f"{out}/targets/big.bin"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size_mib):
            f.write(chunk[i % 997:] + chunk[: i % 997])
    publish(out, {"big.bin": TargetFile.from_file("big.bin", path, ["sha256"])}, None)
    print("big.bin")


def delegated(out, roles, total):
    per = total // roles
    groups = {}
    last = None
    for r in range(roles):
        name = f"team-{r:02d}"
        files = {}
        for t in range(per):
            path = f"{name}/model-{t:04d}.bin"
            data = f"{path}\n".encode()
            files[path] = TargetFile.from_data(path, data, ["sha256"])
            last = (path, data)
        groups[name] = (CryptoSigner.generate_ed25519(), files)
    write(f"{out}/targets/{last[0]}", last[1])
    publish(out, {}, groups)
    print(last[0])


def sharded(out, prefix, count, size_mib, nbins, sign_key=None):
    import hashlib
    width = len(f"{nbins - 1:x}")
    assert nbins == 16 ** width, "BINS is a power of 16"
    bins = [(CryptoSigner.generate_ed25519(), {}) for _ in range(nbins)]
    per = (size_mib << 20) // count
    names = [f"{prefix}model-{i + 1:05d}-of-{count:05d}.bin" for i in range(count)] + [f"{prefix}config.json"]
    for n, path in enumerate(names):
        local = f"{out}/targets/{path}"
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as f:
            if path.endswith(".json"):
                f.write(b'{"architectures": ["Example"]}\n')
            else:
                block = os.urandom(1 << 16)
                left = per
                while left:
                    f.write(block[: min(left, len(block))])
                    left -= min(left, len(block))
        bin_of = int(hashlib.sha256(path.encode()).hexdigest()[:width], 16)
        bins[bin_of][1][path] = TargetFile.from_file(path, local, ["sha256"])
    # A decoy: a bin lists a name under the prefix that it is not trusted for.
    decoy = f"{prefix}decoy.bin"
    wrong = (int(hashlib.sha256(decoy.encode()).hexdigest()[:width], 16) + 1) % nbins
    bins[wrong][1][decoy] = TargetFile.from_data(decoy, b"not trusted here\n", ["sha256"])
    # Neighbours that are not under the prefix.
    top = {}
    for other in (prefix.rstrip("/") + "-old/model.bin", "unrelated/model.bin"):
        data = f"{other}\n".encode()
        write(f"{out}/targets/{other}", data)
        top[other] = TargetFile.from_data(other, data, ["sha256"])
    if sign_key:
        # The model signed by its producer (OpenSSF model signing, the reference CLI),
        # the bundle published beside the prefix as the operator looks for it.
        import subprocess
        sig = prefix.rstrip("/") + ".sig"
        cli = os.path.join(os.path.dirname(sys.executable), "model_signing")
        subprocess.run([cli, "sign", "key", f"{out}/targets/{prefix}", "--private_key", sign_key,
                        "--signature", f"{out}/targets/{sig}"], check=True, stdout=subprocess.DEVNULL)
        top[sig] = TargetFile.from_file(sig, f"{out}/targets/{sig}", ["sha256"])
    publish(out, top, None, bins)
    print("\n".join(sorted(names)))


def models(out, name, versions):
    targets = {}
    for v in versions:
        path = f"{name}/{v}/model.onnx"
        data = f"weights of {name} {v}\n".encode() * 4096
        write(f"{out}/targets/{path}", data)
        targets[path] = TargetFile.from_data(path, data, ["sha256", "sha512"])
    publish(out, targets, None)
    print("\n".join(targets))


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    if kind == "big":
        big(out, int(sys.argv[3]))
    elif kind == "sharded":
        sharded(out, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
                sys.argv[7] if len(sys.argv) > 7 else None)
    elif kind == "models":
        models(out, sys.argv[3], sys.argv[4:])
    else:
        delegated(out, int(sys.argv[3]), int(sys.argv[4]))
