"""The shared token between the web tier and the model server (pure Python: settings and the server both read it).

In the embedded default nobody sets `INFERENCE_REMOTE_API_KEY`: the first process that needs the token writes a
random one into the data directory, and every later process of the same store (web, model server) reads it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def shared_token(data_dir: Path) -> str:
    path = Path(data_dir) / "inference_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: when web and model server start together, one writes and the other reads what it wrote.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
    for _ in range(100):  # the other process may have created the file and not yet written it
        token = path.read_text().strip()
        if token:
            return token
        import time  # only on this rare path

        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty: remove it and start again")
