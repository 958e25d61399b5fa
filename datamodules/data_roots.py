"""Where a published dataset's local copy is: the user's ``--data-root``, else the dataset's environment variable.

matcv distributes no published data set and knows no default location for one: a dataset that is not
given is an error saying how to give it.
"""

from __future__ import annotations

import os
from pathlib import Path


def given_data_root(data_root: str | Path | None, env_var: str, not_given: str) -> tuple[Path, str]:
    """(the folder given, where it came from, for messages); FileNotFoundError(``not_given``) when neither
    ``data_root`` nor ``$env_var`` names one."""
    if data_root is not None:
        return Path(data_root), "--data-root / data_root"
    if os.environ.get(env_var):
        return Path(os.environ[env_var]), f"${env_var}"
    raise FileNotFoundError(not_given)
