#!/usr/bin/env python3
"""Builds the TUF repositories of modelgate's trust tests with python-tuf, the reference
implementation: one folder per scenario, each with

    root.json          the pinned initial root a client starts from
    phase1/, phase2/   what the server serves, in order (metadata/ and targets/ each)
    expect.json        the target asked for and the outcome of the last phase:
                       {"target", "phases", "error" (TrustError reason or null),
                        "role" (named in the error), "trusted" (versions after success)}

Usage: scenarios.py OUT_DIR
"""

import copy
import json
import os
import shutil
import sys
from datetime import datetime, timedelta, timezone

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

TOP = ["root", "timestamp", "snapshot", "targets"]
NOW = datetime.now(timezone.utc).replace(microsecond=0)
FUTURE = NOW + timedelta(days=30)
PAST = NOW - timedelta(days=1)
MODEL = b"onnx-model-weights:" + bytes(range(256)) * 64  # 16 KiB and a bit
SER = JSONSerializer(compact=False)


def signer(kind="ed25519"):
    return {
        "ed25519": CryptoSigner.generate_ed25519,
        "ecdsa": CryptoSigner.generate_ecdsa,
        "rsa": CryptoSigner.generate_rsa,
    }[kind]()


class Repo:
    def __init__(self, consistent=False, kinds=None):
        kinds = kinds or {}
        self.consistent = consistent
        self.signers = {r: [signer(kinds.get(r, "ed25519"))] for r in TOP}
        root = Root(expires=FUTURE, consistent_snapshot=consistent)
        for r in TOP:
            root.add_key(self.signers[r][0].public_key, r)
        self.root = Metadata(root)
        self.targets = Metadata(Targets(expires=FUTURE))
        self.snapshot = Metadata(Snapshot(expires=FUTURE))
        self.timestamp = Metadata(Timestamp(expires=FUTURE))
        self.delegated = {}  # name -> Metadata[Targets]
        self.delegated_signers = {}  # name -> [signer]
        self.files = {}  # target path -> bytes
        self.root_history = []  # bytes of each published root version
        self.sign_root()

    # --- editing -------------------------------------------------------------------
    def sign(self, md, signers):
        md.signatures.clear()
        for s in signers:
            md.sign(s, append=True)

    def sign_root(self, extra=()):
        self.sign(self.root, self.signers["root"] + list(extra))
        self.root_history.append(self.root.to_bytes(SER))

    def add_target(self, path, data=MODEL, role="targets", hashes=("sha256", "sha512")):
        info = TargetFile.from_data(path, data, list(hashes))
        md = self.targets if role == "targets" else self.delegated[role]
        md.signed.targets[path] = info
        self.files[path] = data
        return info

    def delegate(self, name, parent="targets", paths=None, prefixes=None, terminating=False):
        s = signer()
        parent_md = self.targets if parent == "targets" else self.delegated[parent]
        if parent_md.signed.delegations is None:
            parent_md.signed.delegations = Delegations(keys={}, roles={})
        d = parent_md.signed.delegations
        d.keys[s.public_key.keyid] = s.public_key
        d.roles[name] = DelegatedRole(name, [s.public_key.keyid], 1, terminating, paths, prefixes)
        self.delegated[name] = Metadata(Targets(expires=FUTURE))
        self.delegated_signers[name] = [s]

    def rotate(self, role, root_version):
        """Replaces `role`'s key in a new root version; returns the old signers."""
        old = self.signers[role]
        new = signer()
        self.root.signed.revoke_key(old[0].public_key.keyid, role)
        self.root.signed.add_key(new.public_key, role)
        self.root.signed.version = root_version
        self.signers[role] = [new]
        return old

    def bump(self, *roles):
        for r in roles:
            self.md(r).signed.version += 1

    def md(self, role):
        return {"root": self.root, "timestamp": self.timestamp, "snapshot": self.snapshot,
                "targets": self.targets}.get(role) or self.delegated[role]

    # --- publishing ----------------------------------------------------------------
    def publish(self, out, resign=True):
        """Writes metadata/ and targets/ under `out`: snapshot lists every targets
        role's version, timestamp lists the snapshot (with length and hashes)."""
        meta = os.path.join(out, "metadata")
        tdir = os.path.join(out, "targets")
        os.makedirs(meta, exist_ok=True)
        os.makedirs(tdir, exist_ok=True)
        if resign:
            for name, md in self.delegated.items():
                self.sign(md, self.delegated_signers[name])
            self.sign(self.targets, self.signers["targets"])
            self.snapshot.signed.meta = {"targets.json": MetaFile(self.targets.signed.version)}
            for name, md in self.delegated.items():
                self.snapshot.signed.meta[f"{name}.json"] = MetaFile(md.signed.version)
            self.sign(self.snapshot, self.signers["snapshot"])
            snap = self.snapshot.to_bytes(SER)
            self.timestamp.signed.snapshot_meta = MetaFile.from_data(self.snapshot.signed.version, snap, ["sha256"])
            self.sign(self.timestamp, self.signers["timestamp"])
        for i, raw in enumerate(self.root_history, start=1):
            write(os.path.join(meta, f"{i}.root.json"), raw)
        write(os.path.join(meta, "root.json"), self.root_history[-1])
        write(os.path.join(meta, "timestamp.json"), self.timestamp.to_bytes(SER))
        roles = {"snapshot": self.snapshot, "targets": self.targets, **self.delegated}
        for name, md in roles.items():
            raw = md.to_bytes(SER)
            write(os.path.join(meta, f"{name}.json"), raw)
            write(os.path.join(meta, f"{md.signed.version}.{name}.json"), raw)
        for path, data in self.files.items():
            info = TargetFile.from_data(path, data, ["sha256"])
            write(os.path.join(tdir, path), data)
            d, f = os.path.split(path)
            write(os.path.join(tdir, d, f"{info.hashes['sha256']}.{f}"), data)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def basic(**kw):
    r = Repo(**kw)
    r.add_target("fraud/1.0/model.onnx")
    return r


# Each scenario publishes its phases into `out` and returns expect.json's content.
# --- success paths ----------------------------------------------------------------------
@scenario
def ok_basic(out):
    r = basic()
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": None, "trusted": {"root": 1, "timestamp": 1, "snapshot": 1, "targets": 1}}


@scenario
def ok_consistent_snapshot(out):
    r = basic(consistent=True)
    r.publish(f"{out}/phase1")
    # Only hash-prefixed target names may be used: remove the plain one.
    os.remove(f"{out}/phase1/targets/fraud/1.0/model.onnx")
    for f in ("snapshot.json", "targets.json"):
        os.remove(f"{out}/phase1/metadata/{f}")
    return r, {"target": "fraud/1.0/model.onnx", "error": None}


@scenario
def ok_ecdsa_and_rsa_keys(out):
    r = Repo(kinds={"root": "ecdsa", "timestamp": "rsa", "snapshot": "ecdsa", "targets": "rsa"})
    r.add_target("fraud/1.0/model.onnx")
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": None}


@scenario
def ok_sha512_only(out):
    r = Repo()
    r.add_target("fraud/1.0/model.onnx", hashes=("sha512",))
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": None}


@scenario
def ok_root_rotation(out):
    r = basic()
    old = r.rotate("root", 2)
    r.sign_root(extra=old)  # signed by the old and the new root keys
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": None, "trusted": {"root": 2}}


@scenario
def ok_fast_forward_recovery(out):
    r = basic()
    r.timestamp.signed.version = 9
    r.publish(f"{out}/phase1")
    # The timestamp key is rotated in root v2 and the timestamp restarts at version 1:
    # the client must drop its v9 timestamp rather than call v1 a rollback.
    r.rotate("timestamp", 2)
    r.sign_root()
    r.timestamp.signed.version = 1
    r.publish(f"{out}/phase2")
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": None, "trusted": {"root": 2, "timestamp": 1}}


@scenario
def ok_delegated_target(out):
    r = Repo()
    r.delegate("fraud-team", paths=["fraud/*/*"])
    r.add_target("fraud/1.0/model.onnx", role="fraud-team")
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": None}


@scenario
def ok_path_hash_prefix_delegation(out):
    import hashlib
    name = "fraud/1.0/model.onnx"
    prefix = hashlib.sha256(name.encode()).hexdigest()[:2]
    r = Repo()
    r.delegate("bin-a", prefixes=[prefix])
    r.add_target(name, role="bin-a")
    r.publish(f"{out}/phase1")
    return r, {"target": name, "error": None}


@scenario
def ok_target_outside_paths_is_ignored_not_fatal(out):
    # A role listing a target outside its delegated paths spoils only that entry.
    r = Repo()
    r.delegate("fraud-team", paths=["fraud/*/*"])
    r.add_target("fraud/1.0/model.onnx", role="fraud-team")
    r.add_target("payments/1.0/model.onnx", role="fraud-team")
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": None}


@scenario
def ok_same_version_timestamp_keeps_trusted(out):
    r = basic()
    r.bump("timestamp")
    r.publish(f"{out}/phase1")
    # Same timestamp version, new content (it lists a newer snapshot): keep the trusted one.
    r.bump("snapshot")
    r.publish(f"{out}/phase2")
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": None, "trusted": {"timestamp": 2, "snapshot": 1}}


@scenario
def ok_revoked_in_a_newer_version(out):
    r = basic()
    r.add_target("fraud/2.0/model.onnx")
    r.publish(f"{out}/phase1")
    # 2.0 revoked: the next targets, snapshot and timestamp no longer list it.
    del r.targets.signed.targets["fraud/2.0/model.onnx"]
    r.bump("targets", "snapshot", "timestamp")
    r.publish(f"{out}/phase2")
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": None, "trusted": {"timestamp": 2, "snapshot": 2, "targets": 2}}


# --- refusals ---------------------------------------------------------------------------
def expired(role):
    def build(out):
        r = basic()
        r.md(role).signed.expires = PAST
        if role == "root":
            r.root_history.clear()
            r.sign_root()
        r.publish(f"{out}/phase1")
        return r, {"target": "fraud/1.0/model.onnx", "error": "Expired", "role": role}
    build.__name__ = f"expired_{role}"
    return scenario(build)


for _role in TOP:
    expired(_role)


@scenario
def freeze_attack(out):
    r = basic()
    r.timestamp.signed.expires = NOW + timedelta(hours=1)
    r.publish(f"{out}/phase1")
    # The server keeps serving the same timestamp; the client's clock moves two hours on.
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase1"], "advance_clock": 7200, "error": "Expired", "role": "timestamp"}


@scenario
def rollback_timestamp(out):
    r = basic()
    r.bump("timestamp")
    r.publish(f"{out}/phase1")
    r.timestamp.signed.version = 1
    r.publish(f"{out}/phase2")
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": "RollbackDetected", "role": "timestamp"}


@scenario
def rollback_snapshot(out):
    r = basic()
    r.bump("snapshot", "timestamp")
    r.publish(f"{out}/phase1")
    r.snapshot.signed.version = 1
    r.bump("timestamp")
    r.publish(f"{out}/phase2")
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": "RollbackDetected", "role": "snapshot"}


@scenario
def rollback_targets(out):
    r = basic()
    r.bump("targets")
    r.publish(f"{out}/phase1")
    r.targets.signed.version = 1
    r.bump("snapshot", "timestamp")
    r.publish(f"{out}/phase2")
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": "RollbackDetected", "role": "targets"}


@scenario
def mix_and_match_snapshot(out):
    r = basic()
    r.publish(f"{out}/phase1")
    old_snapshot = open(f"{out}/phase1/metadata/snapshot.json", "rb").read()
    r.bump("snapshot", "timestamp")
    r.publish(f"{out}/phase2")
    # The new timestamp (listing snapshot v2) served with the old snapshot v1; the
    # timestamp lists no hash here, so only the version can catch it.
    r.timestamp.signed.snapshot_meta = MetaFile(2)
    r.sign(r.timestamp, r.signers["timestamp"])
    write(f"{out}/phase2/metadata/timestamp.json", r.timestamp.to_bytes(SER))
    write(f"{out}/phase2/metadata/snapshot.json", old_snapshot)
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": "VersionMismatch", "role": "snapshot"}


@scenario
def snapshot_hash_mismatch(out):
    r = basic()
    r.publish(f"{out}/phase1")
    # A snapshot signed properly but not the one the timestamp's hash names.
    r.snapshot.signed.expires = FUTURE + timedelta(days=1)
    r.sign(r.snapshot, r.signers["snapshot"])
    write(f"{out}/phase1/metadata/snapshot.json", r.snapshot.to_bytes(SER))
    return r, {"target": "fraud/1.0/model.onnx", "error": "HashMismatch", "role": "snapshot"}


@scenario
def wrong_target_hash(out):
    r = basic()
    r.publish(f"{out}/phase1")
    tampered = bytearray(MODEL)
    tampered[100] ^= 0xFF
    write(f"{out}/phase1/targets/fraud/1.0/model.onnx", bytes(tampered))
    return r, {"target": "fraud/1.0/model.onnx", "error": "HashMismatch", "role": "target"}


@scenario
def target_longer_than_signed(out):
    r = basic()
    r.publish(f"{out}/phase1")
    write(f"{out}/phase1/targets/fraud/1.0/model.onnx", MODEL + b"\x00" * 4096)
    return r, {"target": "fraud/1.0/model.onnx", "error": "TargetMismatch", "role": "signed length"}


@scenario
def target_shorter_than_signed(out):
    r = basic()
    r.publish(f"{out}/phase1")
    write(f"{out}/phase1/targets/fraud/1.0/model.onnx", MODEL[:-10])
    return r, {"target": "fraud/1.0/model.onnx", "error": "TargetMismatch", "role": "signed length"}


@scenario
def timestamp_signed_by_wrong_key(out):
    r = basic()
    r.signers["timestamp"] = [signer()]
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": "BadSignature", "role": "timestamp"}


def targets_needing_two_keys():
    """A repository whose targets role needs 2 of 2 keys, signed by only the first."""
    r = basic()
    r.root.signed.add_key(signer().public_key, "targets")
    r.root.signed.roles["targets"].threshold = 2
    r.root_history.clear()
    r.sign_root()
    return r


@scenario
def targets_threshold_not_met(out):
    r = targets_needing_two_keys()
    r.publish(f"{out}/phase1")  # targets signed by one of the two keys only
    return r, {"target": "fraud/1.0/model.onnx", "error": "BadSignature", "role": "targets"}


@scenario
def duplicate_signatures_do_not_count_twice(out):
    r = targets_needing_two_keys()
    r.publish(f"{out}/phase1")
    doc = json.load(open(f"{out}/phase1/metadata/targets.json"))
    doc["signatures"].append(copy.deepcopy(doc["signatures"][0]))
    write(f"{out}/phase1/metadata/targets.json", json.dumps(doc).encode())
    r.snapshot.signed.meta = {"targets.json": MetaFile(1)}
    return r, {"target": "fraud/1.0/model.onnx", "error": "BadSignature", "role": "targets"}


@scenario
def root_rotation_without_old_keys(out):
    r = basic()
    r.rotate("root", 2)
    r.sign_root()  # only the new key signs: an attacker's root
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": "BadSignature", "role": "root"}


@scenario
def root_version_mismatch(out):
    r = basic()
    r.root.signed.version = 3
    r.sign_root()  # published as 2.root.json but says version 3
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": "VersionMismatch", "role": "root"}


@scenario
def unknown_target(out):
    r = basic()
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/9.9/model.onnx", "error": "UnknownTarget", "role": "fraud/9.9/model.onnx"}


@scenario
def terminating_delegation_stops_search(out):
    r = Repo()
    r.delegate("first", paths=["fraud/*/*"], terminating=True)
    r.delegate("second", paths=["fraud/*/*"])
    r.add_target("fraud/1.0/model.onnx", role="second")
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": "UnknownTarget", "role": "fraud/1.0/model.onnx"}


@scenario
def delegated_role_not_trusted_for_path(out):
    r = Repo()
    r.delegate("payments-team", paths=["payments/*/*"])
    r.add_target("fraud/1.0/model.onnx", role="payments-team")
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": "UnknownTarget", "role": "fraud/1.0/model.onnx"}


@scenario
def endless_timestamp(out):
    r = basic()
    r.publish(f"{out}/phase1")
    doc = json.load(open(f"{out}/phase1/metadata/timestamp.json"))
    doc["signed"]["padding"] = "x" * 100_000
    write(f"{out}/phase1/metadata/timestamp.json", json.dumps(doc).encode())
    return r, {"target": "fraud/1.0/model.onnx", "error": "TooLarge", "role": "timestamp.json"}


@scenario
def root_rotation_skipping_a_version(out):
    # Root v3 rotates the timestamp key, but 2.root.json is missing: the client must not
    # jump to v3, so the new timestamp fails against v1's keys.
    r = basic()
    r.rotate("timestamp", 3)
    r.sign_root()
    r.publish(f"{out}/phase1")
    os.rename(f"{out}/phase1/metadata/2.root.json", f"{out}/phase1/metadata/3.root.json")
    return r, {"target": "fraud/1.0/model.onnx", "error": "BadSignature", "role": "timestamp"}


@scenario
def delegation_cycle_terminates(out):
    r = Repo()
    r.delegate("a", paths=["fraud/*/*"])
    r.delegate("b", parent="a", paths=["fraud/*/*"])
    # b delegates back to a: a cycle the search must not follow forever.
    b = r.delegated["b"].signed
    a_key = r.delegated_signers["a"][0].public_key
    b.delegations = Delegations(keys={a_key.keyid: a_key}, roles={"a": DelegatedRole("a", [a_key.keyid], 1, False, ["fraud/*/*"])})
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "error": "UnknownTarget", "role": "fraud/1.0/model.onnx"}


@scenario
def ok_delegation_expiring_first(out):
    # The delegated role expires in 2 days, everything else in 30: a client that
    # looked the target up today must refuse it once that role has expired.
    r = Repo()
    r.delegate("fraud-team", paths=["fraud/*/*"])
    r.delegated["fraud-team"].signed.expires = NOW + timedelta(days=2)
    r.add_target("fraud/1.0/model.onnx", role="fraud-team")
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx"}


@scenario
def ok_delegations_checked_per_delegator(out):
    # Role "shared" is delegated twice: by "a" for fraud/* with the key that signs it,
    # and by "b" for payments/* with another key. A client that looked "shared" up
    # through "a" must not trust it through "b": payments/1.0 must be refused.
    r = Repo()
    r.delegate("a", paths=["fraud/*/*"])
    r.delegate("b", paths=["payments/*/*"])
    good, other = signer(), signer()
    for parent, key, paths in (("a", good, ["fraud/*/*"]), ("b", other, ["payments/*/*"])):
        d = r.delegated[parent].signed
        d.delegations = Delegations(
            keys={key.public_key.keyid: key.public_key},
            roles={"shared": DelegatedRole("shared", [key.public_key.keyid], 1, False, paths)},
        )
    r.delegated["shared"] = Metadata(Targets(expires=FUTURE))
    r.delegated_signers["shared"] = [good]
    r.add_target("fraud/1.0/model.onnx", role="shared")
    r.add_target("payments/1.0/model.onnx", role="shared")
    r.publish(f"{out}/phase1")
    return r, {"target": "fraud/1.0/model.onnx", "second_target": "payments/1.0/model.onnx"}


def hide(out, phase, role, version):
    """The server stops serving `role`'s metadata (both names) in `phase`."""
    for f in (f"{role}.json", f"{version}.{role}.json"):
        os.remove(f"{out}/{phase}/metadata/{f}")


@scenario
def hidden_delegated_update(out):
    # The security team revokes fraud/1.0 in the delegated role (new fraud-team.json,
    # snapshot and timestamp, all correctly signed); the server serves the new
    # timestamp and snapshot but answers 404 for the new fraud-team.json. A client
    # that trusted the target before must not go on trusting it (python-tuf fails the
    # update the same way).
    r = Repo()
    r.delegate("fraud-team", paths=["fraud/*/*"])
    r.add_target("fraud/1.0/model.onnx", role="fraud-team")
    r.publish(f"{out}/phase1")
    del r.delegated["fraud-team"].signed.targets["fraud/1.0/model.onnx"]
    r.bump("fraud-team", "snapshot", "timestamp")
    r.publish(f"{out}/phase2")
    hide(out, "phase2", "fraud-team", 2)
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": "MetadataUnavailable", "role": "fraud-team"}


@scenario
def hidden_snapshot_update(out):
    # The same one level up: a new timestamp names a snapshot the server does not serve.
    r = basic()
    r.publish(f"{out}/phase1")
    del r.targets.signed.targets["fraud/1.0/model.onnx"]
    r.bump("targets", "snapshot", "timestamp")
    r.publish(f"{out}/phase2")
    hide(out, "phase2", "snapshot", 2)
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": "MetadataUnavailable", "role": "snapshot"}


@scenario
def ok_unchanged_delegated_role_need_not_be_served_again(out):
    # A new snapshot lists fraud-team at the version the client already verified: its
    # local copy is the current one, so a server that no longer serves it hides nothing.
    r = Repo()
    r.delegate("fraud-team", paths=["fraud/*/*"])
    r.add_target("fraud/1.0/model.onnx", role="fraud-team")
    r.publish(f"{out}/phase1")
    r.bump("snapshot", "timestamp")
    r.publish(f"{out}/phase2")
    hide(out, "phase2", "fraud-team", 1)
    return r, {"target": "fraud/1.0/model.onnx", "phases": ["phase1", "phase2"], "error": None, "trusted": {"snapshot": 2}}


def main():
    out = sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    for name, build in SCENARIOS.items():
        d = os.path.join(out, name)
        os.makedirs(d)
        repo, expect = build(d)
        expect.setdefault("phases", ["phase1"])
        write(os.path.join(d, "root.json"), repo.root_history[0])
        write(os.path.join(d, "expect.json"), json.dumps(expect, indent=1).encode())
    print(f"{len(SCENARIOS)} scenarios in {out}")


if __name__ == "__main__":
    main()
