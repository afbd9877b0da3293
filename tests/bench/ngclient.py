#!/usr/bin/env python3
"""python-tuf's ngclient as the yardstick: refresh, find each target, download it (one
after the other, as its API does).
Usage: ngclient.py METADATA_URL TARGETS_URL ROOT WORKDIR TARGET...  (SSL_CERT_FILE names the CA)"""

import os
import sys

from tuf.ngclient import Updater

metadata_url, targets_url, root, work = sys.argv[1:5]
targets = sys.argv[5:]
md = os.path.join(work, "metadata")
os.makedirs(md, exist_ok=True)
out = os.path.join(work, "targets")
os.makedirs(out, exist_ok=True)
with open(root, "rb") as f:
    bootstrap = f.read()
u = Updater(metadata_dir=md, metadata_base_url=metadata_url, target_base_url=targets_url, target_dir=out, bootstrap=bootstrap)
u.refresh()
for target in targets:
    info = u.get_targetinfo(target)
    assert info is not None, target
    u.download_target(info, os.path.join(out, target.replace("/", "_")))
