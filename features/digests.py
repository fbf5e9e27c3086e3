"""The SHA-256 digests that tie a registered model version to its files.

``training`` records the digest of each file of the model directory (``booster.txt``,
``metadata.json``) as a tag of the registered model version when it registers it; ``serving``
checks the files it downloaded against those tags before it parses anything, so a file cut short,
edited or swapped in the artifact store is refused. Tags live in the registry's database, not
next to the files, so whoever can change the files cannot change their digests too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: The prefix of the model-version tags: ``sha256.booster.txt`` = the digest of that file.
TAG_PREFIX = "sha256."


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 digest of the file ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_tag(file_name: str) -> str:
    """The model-version tag that holds ``file_name``'s digest."""
    return TAG_PREFIX + file_name


def digest_tags(files: dict[str, Path]) -> dict[str, str]:
    """The tags recording each ``{name: path}`` file's digest."""
    return {digest_tag(name): file_sha256(path) for name, path in files.items()}


def recorded_digests(tags: dict[str, str]) -> dict[str, str]:
    """``{file name: digest}`` from a model version's tags."""
    return {key[len(TAG_PREFIX):]: value for key, value in tags.items()
            if key.startswith(TAG_PREFIX)}
