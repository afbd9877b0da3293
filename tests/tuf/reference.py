#!/usr/bin/env python3
"""python-tuf's ngclient, the reference client, over the trust tests' scenarios: each
scenario's phases in order, one Updater per phase over one metadata directory (as
modelgate's test client runs them), then the scenario's target looked up and
downloaded. Prints one JSON object: {scenario: {"ok": bool, "error": str}}.

Usage: reference.py BASE_URL SCENARIOS_DIR  (SSL_CERT_FILE names the server's CA)
Scenarios that move the client's clock (`advance_clock`) are left out: python-tuf reads
the real clock.
"""

import json
import os
import sys
import tempfile

from tuf.ngclient import Updater


def run(base_url, directory, name):
    expect = json.load(open(os.path.join(directory, name, "expect.json")))
    if expect.get("advance_clock"):
        return None
    bootstrap = open(os.path.join(directory, name, "root.json"), "rb").read()
    with tempfile.TemporaryDirectory() as work:
        metadata = os.path.join(work, "metadata")
        targets = os.path.join(work, "targets")
        os.makedirs(metadata)
        os.makedirs(targets)
        for i, phase in enumerate(expect["phases"]):
            last = i + 1 == len(expect["phases"])
            url = f"{base_url}/{name}/{phase}"
            try:
                u = Updater(
                    metadata_dir=metadata,
                    metadata_base_url=f"{url}/metadata/",
                    target_base_url=f"{url}/targets/",
                    target_dir=targets,
                    bootstrap=bootstrap if i == 0 else None,
                )
                u.refresh()
                info = u.get_targetinfo(expect["target"])
                if info is None:
                    raise LookupError(f"{expect['target']} is not a trusted target")
                u.download_target(info, os.path.join(targets, f"{phase}.bin"))
            except Exception as e:  # every refusal counts, whatever its class
                if last:
                    return {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
                return {"ok": False, "error": f"earlier phase {phase} failed: {type(e).__name__}: {e}"[:300]}
    return {"ok": True, "error": ""}


def main():
    base_url, directory = sys.argv[1:3]
    results = {}
    for name in sorted(os.listdir(directory)):
        if os.path.isfile(os.path.join(directory, name, "expect.json")):
            outcome = run(base_url.rstrip("/"), directory, name)
            if outcome is not None:
                results[name] = outcome
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
