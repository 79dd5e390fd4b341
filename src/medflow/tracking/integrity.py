"""A registered version's files as they were registered: a digest kept in the registry, checked before any use.

Whoever can write the artifact store can replace a version's files, and a pyfunc's files are code that MLflow runs
when it loads them. register records sha256 over the files (sorted relative paths and contents) as a tag of the
version, in the registry's database, which replacing files does not reach. medflow copies a version into a fresh
folder and compares it with that tag before it reads, imports or unpickles anything in it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST_TAG = "medflow.files_sha256"
# A version's last write at registration (registry.py): until it reads complete, the version is no candidate.
STATE = "medflow.state"
COMPLETE = "complete"
# MLflow itself writes this file (the version's name and number) into every registered model it downloads.
MLFLOW_META = "registered_model_meta"


class ModelFilesChanged(ValueError):
    """A version whose files cannot be shown to be the registered ones; nothing in them was loaded.

    str() says what is wrong; `medflow_fix` what to do about it (the command line prints both on one line)."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.medflow_fix = fix


class NotMadeByMedflow(ModelFilesChanged):
    """A version of a medflow model that medflow's own registration did not make (or never finished)."""

    def __init__(self, what: str):
        super().__init__(
            what,
            "medflow loads only versions it registered (a registered model runs code when loaded): register one with "
            "medflow (medflow run) and promote it; docs/team.md says who may register",
        )


def check_made(name: str, version: str, tags: dict[str, str], c=None) -> None:
    """Refuses a version unless medflow registered it: its registration completed (medflow.state) and the model's
    audit trail records its creation, with the digest its tag holds (or the one `accept-files` recorded)."""
    from medflow.tracking import audit

    if tags.get(STATE) != COMPLETE:
        raise NotMadeByMedflow(
            f"{name} v{version} is no completed medflow registration ({STATE}: {tags.get(STATE, 'missing')}): "
            "nothing in it was loaded"
        )
    records = audit.find(name, f"models:/{name}/{version}", ("version.create", "version.tags"), c)
    if not any(r.body["action"] == "version.create" for r in records):
        raise NotMadeByMedflow(
            f"{name} v{version} has no record of its registration in the audit trail (medflow audit show {name}): "
            "medflow did not register it, and nothing in it was loaded"
        )
    recorded = None
    for r in records:
        recorded = (r.body["after"] or {}).get(DIGEST_TAG, recorded)
    if DIGEST_TAG in tags and tags[DIGEST_TAG] != recorded:
        raise NotMadeByMedflow(
            f"{name} v{version}: its {DIGEST_TAG} tag differs from the digest its audit records hold: the tag was "
            "changed outside medflow, and nothing in it was loaded"
        )


def files_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MLFLOW_META:
            continue
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def download(model_uri: str, dst: Path) -> Path:
    """A copy of the model's files in dst (a local store would otherwise hand back its own folder)."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))


def check(name: str, version: str, tags: dict[str, str], root: Path) -> None:
    expected = tags.get(DIGEST_TAG)
    if expected is None:
        raise ModelFilesChanged(
            f"{name} v{version} was registered without a digest of its files ({DIGEST_TAG}; registered before "
            "medflow recorded one, or by hand): nothing shows they are the registered ones, so nothing in them was "
            "loaded",
            "register it again from its training data (medflow run --force), or, after review, accept its files as "
            f"they are now: medflow accept-files {name} {version} --reason '...'",
        )
    if files_digest(root) != expected:
        raise ModelFilesChanged(
            f"{name} v{version}: its files differ from the ones registered ({DIGEST_TAG}): they were changed after "
            "registration, and nothing in them was loaded",
            "restore them from a backup of the artifact store, or register a new version (medflow run --force) "
            "and promote it",
        )


def verified_copy(name: str, version: str, tags: dict[str, str], dst: Path) -> Path:
    """The version's files copied into dst, once medflow's registration of them and their digest are confirmed."""
    check_made(name, version, tags)
    root = download(f"models:/{name}/{version}", dst)
    check(name, version, tags, root)
    return root
