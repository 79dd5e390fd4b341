"""Model registry: log the pyfunc into a run, register versions, read and move aliases (no stages).

A version is made in steps (version with tags, card, alias) that a kill can interrupt; its last write is the tag
`medflow.state=complete`. Until then it is no candidate, and the next `register` of the same training run finishes
that version instead of adding another, so one run is one version.

Every write here appends a record to the model's audit trail (medflow.tracking.audit) after it succeeded: what was
written, before -> after.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from medflow.lineage import lineage
from medflow.privacy.scanner import assert_clean
from medflow.tracking import audit, integrity
from medflow.tracking.store import client, retry_locked

if TYPE_CHECKING:
    from medflow.params import Params
    from medflow.paths import Paths

log = logging.getLogger(__name__)

STATE = integrity.STATE
COMPLETE = integrity.COMPLETE
# A registration unfinished for this long was cut short; a younger one may still be running in another process.
STALE_S = 600.0


@dataclass(frozen=True)
class Version:
    version: str
    run_id: str | None
    tags: dict[str, str]
    source: str = ""

    @property
    def complete(self) -> bool:
        return self.tags.get(STATE) == COMPLETE


def _model(name: str) -> str:
    return f"models:/{name}"


def _of(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def _version(mv) -> Version:
    return Version(str(mv.version), mv.run_id, dict(mv.tags), mv.source or "")


def model_lock(name: str):
    """Serialises gate decisions and alias moves for one model among this machine's processes.

    Without it two registrations read the same champion, both promote, and the worse one can win last.
    """
    import tempfile

    import mlflow
    from filelock import FileLock

    key = hashlib.sha256(f"{mlflow.get_registry_uri()}\0{name}".encode()).hexdigest()[:24]
    return FileLock(Path(tempfile.gettempdir()) / f"medflow-registry-{key}.lock")


def log_model(run_id: str, bundle: Path) -> str:
    """Logs the bundle as a pyfunc model into an existing run and returns its model URI."""
    import mlflow

    from medflow.tracking import pyfunc

    assert_clean(Path(bundle), "model bundle")
    # evaluate logs its decision threshold on the run: the model labels at it wherever it is loaded.
    threshold = client().get_run(run_id).data.metrics.get("threshold")
    with mlflow.start_run(run_id=run_id):
        return pyfunc.log_model(Path(bundle), threshold)


def logged_model_of_run(run_id: str) -> str | None:
    """The model a killed register already logged into the run, so a rerun does not log a second one."""
    c = client()
    experiment = c.get_run(run_id).info.experiment_id
    found = c.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'", max_results=1)
    return f"models:/{found[0].model_id}" if found else None


def lineage_of_run(run_id: str, params: Params, paths: Paths) -> dict[str, str]:
    """What the run recorded when it started wins: code, data or params may have moved on since training."""
    recorded = client().get_run(run_id).data.tags
    return {k: recorded.get(k, v) for k, v in lineage(params, paths).items()}


def ensure_model(name: str, description: str, tags: dict[str, str]) -> None:
    """The registered model itself carries what it is for, so the UI's model page is not blank."""
    from mlflow.exceptions import MlflowException

    assert_clean({"description": description, **tags}, f"registered model {name}")
    c = client()
    try:
        c.create_registered_model(name, tags=tags, description=description)
        audit.append(name, "model.create", _model(name), None, {"description": description, "tags": tags})
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    current = c.get_registered_model(name)
    if current.description != description:
        c.update_registered_model(name, description=description)
        audit.append(name, "model.description", _model(name), current.description, description)
    changed = {k: v for k, v in tags.items() if current.tags.get(k) != v}
    for k, v in changed.items():
        c.set_registered_model_tag(name, k, v)
    if changed:
        audit.append(name, "model.tags", _model(name), {k: current.tags.get(k) for k in changed}, changed)


def register_version(name: str, model_uri: str, tags: dict[str, str]) -> str:
    """The version's tags hold the digest of its files as registered: medflow loads no version without it."""
    import tempfile

    import mlflow

    assert_clean(tags, f"tags of a new version of {name}")
    with tempfile.TemporaryDirectory() as tmp:
        digest = integrity.files_digest(integrity.download(model_uri, Path(tmp)))
    tags = {**tags, integrity.DIGEST_TAG: digest, STATE: "registering"}
    # MLflow prints its own progress ("Registered model ... already exists. Creating a new version") to stderr,
    # between medflow's lines: it goes to the log instead.
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            made = retry_locked(mlflow.register_model, model_uri, name, tags=tags)
    finally:
        for line in said.getvalue().splitlines():
            log.info("mlflow: %s", line)
    version = str(made.version)
    audit.append(name, "version.create", _of(name, version), None, {"source": model_uri, **tags}, made.run_id)
    return version


def record_creation(name: str, version: str) -> None:
    """The creation record of a version whose registration a kill cut short before it was written: without it the
    finished version would never load (integrity.check_made). Its tags as they are, the digest among them."""
    resource = _of(name, version)
    if not audit.find(name, resource, ("version.create",)):
        mv = client().get_model_version(name, version)
        after = {"source": mv.source, **mv.tags, "recorded_late": "true"}
        audit.append(name, "version.create", resource, None, after, mv.run_id)


def versions_of_run(name: str, run_id: str) -> list[Version]:
    from mlflow.exceptions import MlflowException

    try:
        found = client().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return sorted((_version(mv) for mv in found), key=lambda v: int(v.version))


def finish_interrupted(name: str, keep_run_id: str) -> list[str]:
    """Versions of other runs whose registration a kill cut short: completed when their alias was already written
    (the card and tags precede it), else deleted, so no half-made version lingers. Returns what was done."""
    import time

    c = client()
    found = c.search_model_versions(f"name = '{name}' and tags.`{STATE}` = 'registering'")
    now_ms = time.time() * 1000
    done = []
    for mv in found:
        if mv.run_id == keep_run_id or now_ms - mv.creation_timestamp < STALE_S * 1000:
            continue  # this run's own is finished by its caller; a young one may still be in progress elsewhere
        # Search results leave ModelVersion.aliases empty: the model's alias map is the record.
        held = [a for a, v in c.get_registered_model(name).aliases.items() if str(v) == str(mv.version)]
        if held:
            record_creation(name, mv.version)
            mark_complete(name, mv.version)
            done.append(f"completed v{mv.version} (alias {', '.join(held)} already written)")
        else:
            c.delete_model_version(name, mv.version)
            audit.append(name, "version.delete", _of(name, mv.version), mv.tags.get(STATE), None, mv.run_id)
            done.append(f"removed v{mv.version} (registration interrupted before its alias)")
    return done


def get_version(name: str, version: str) -> Version:
    return _version(client().get_model_version(name, version))


def version_by_alias(name: str, alias: str) -> Version | None:
    """None when the model or the alias does not exist, whichever error code this MLflow version uses for it."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        model = c.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    # Read from the model's alias map rather than trusting the error of a by-alias lookup: MLflow 3.17 reports
    # a missing alias as INVALID_PARAMETER_VALUE, other versions as RESOURCE_DOES_NOT_EXIST.
    version = model.aliases.get(alias)
    if version is None:
        return None
    return get_version(name, str(version))


def metric_of(v: Version, key: str) -> float | None:
    """From the version's run (where evaluate logs it); versions registered before 0.2 carried it as a tag."""
    if v.run_id:
        value = client().get_run(v.run_id).data.metrics.get(key)
        if value is not None:
            return value
    return float(v.tags[key]) if key in v.tags else None


def set_alias(name: str, alias: str, version: str) -> None:
    before = aliases(name).get(alias)
    client().set_registered_model_alias(name, alias, version)
    audit.append(name, "alias.set", f"{_model(name)}@{alias}", before, str(version))


def drop_alias(name: str, alias: str, version: str) -> None:
    """Removes alias when it names version: one version, one role."""
    if aliases(name).get(alias) == str(version):
        client().delete_registered_model_alias(name, alias)
        audit.append(name, "alias.delete", f"{_model(name)}@{alias}", str(version), None)


def aliases(name: str) -> dict[str, str]:
    return {a: str(v) for a, v in client().get_registered_model(name).aliases.items()}


CARD = "model_card.json"  # on the version's run, beside model_card.md (the version's description)


def refresh_cards(name: str, before: dict[str, str], also: tuple[str, ...] = ()) -> dict[str, dict]:
    """After aliases moved (before: the alias map until then), rewrites the card of every version that gained or lost
    one, and of `also`: its current aliases and each move of `champion` to or from it (gate, promote, rollback:
    when, who, why) beside the gate's own decision. Returns the rewritten cards (model_card.json) by version."""
    import json
    import tempfile

    from medflow.promotion.card import model_card
    from medflow.tracking.store import log_artifacts

    now = aliases(name)
    moved = {v for a in before.keys() | now.keys() if before.get(a) != now.get(a) for v in (before.get(a), now.get(a))}
    moves = history(name)
    c = client()
    done = {}
    for version in sorted((moved | set(also)) - {None}, key=int):
        run_id = get_version(name, version).run_id
        if not run_id or CARD not in {f.path for f in c.list_artifacts(run_id)}:
            continue  # registered before cards were stored as JSON: its description stays as written
        with tempfile.TemporaryDirectory() as tmp:
            card = json.loads(Path(c.download_artifacts(run_id, CARD, tmp)).read_text())
            card["registry"] = {
                "aliases": sorted(a for a, v in now.items() if v == version),
                "moves": [m for m in moves if version in (m["to"], m["from"])],
            }
            card["audit"] = {"chain": name, "records": audit_of_version(name, version)}
            markdown = model_card(card)
            (Path(tmp) / "out").mkdir()
            (Path(tmp) / "out" / CARD).write_text(json.dumps(card, indent=2) + "\n")
            (Path(tmp) / "out" / "model_card.md").write_text(markdown)
            for file in (CARD, "model_card.md"):
                log_artifacts(run_id, Path(tmp) / "out" / file)
        describe_version(name, version, markdown)
        done[version] = card
    return done


def add_validation(name: str, version: str, row: dict) -> None:
    """Adds a validation (medflow evaluate-external) to the version's card beside its internal test, replacing one of
    the same kind, then rewrites the card (its TRIPOD+AI checklist counted again) and the description."""
    import json
    import tempfile

    from medflow.promotion import tripod
    from medflow.tracking.store import log_artifacts

    run_id = get_version(name, version).run_id
    if not run_id or CARD not in {f.path for f in client().list_artifacts(run_id)}:
        return  # registered before cards were stored as JSON: the report, its tag and audit record still stand
    with tempfile.TemporaryDirectory() as tmp:
        card = json.loads(Path(client().download_artifacts(run_id, CARD, tmp)).read_text())
        card["validation"] = [v for v in card.get("validation") or [] if v["kind"] != row["kind"]] + [row]
        if "tripod" in card:
            card["tripod"] = tripod.checklist(card, card["tripod"].get("declarations") or {})
        (Path(tmp) / "out").mkdir()
        (Path(tmp) / "out" / CARD).write_text(json.dumps(card, indent=2) + "\n")
        log_artifacts(run_id, Path(tmp) / "out" / CARD)
    refresh_cards(name, aliases(name), also=(version,))


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    assert_clean(tags, f"tags of {name} v{version}")
    c = client()
    mv = c.get_model_version(name, version)
    changed = {k: v for k, v in tags.items() if mv.tags.get(k) != v}
    for k, v in changed.items():
        c.set_model_version_tag(name, version, k, v)
    if changed:
        before = {k: mv.tags.get(k) for k in changed}
        audit.append(name, "version.tags", _of(name, version), before, changed, mv.run_id)


def mark_complete(name: str, version: str) -> None:
    c = client()
    mv = c.get_model_version(name, version)
    c.set_model_version_tag(name, version, STATE, COMPLETE)
    audit.append(name, "version.state", _of(name, version), mv.tags.get(STATE), COMPLETE, mv.run_id)


def get_description(name: str, version: str) -> str:
    return client().get_model_version(name, version).description or ""


# MLflow's SQL stores hold a version's description in VARCHAR(5000): PostgreSQL refuses a longer one (SQLite does
# not check), so a card that grew past it would register on a laptop and fail on the team's server.
DESCRIPTION_LIMIT = 5000
CARD_CONTINUES = "\n_The card continues in `model_card.md` on this version's run (MLflow keeps 5,000 characters)._\n"


def fit_description(card: str) -> str:
    """The card whole when it fits the description column, else its leading sections that do, and where the rest is."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    room = DESCRIPTION_LIMIT - len(CARD_CONTINUES)
    cut = card.rfind("\n## ", 0, room)
    return card[: cut if cut > 0 else room] + CARD_CONTINUES


def describe_version(name: str, version: str, description: str) -> None:
    """The description is the model card (fitted to the column): its record holds its digest, before and after."""
    assert_clean(description, f"description of {name} v{version}")
    description = fit_description(description)
    c = client()
    mv = c.get_model_version(name, version)
    if (mv.description or "") == description:
        return
    c.update_model_version(name, version, description=description)
    audit.append(name, "version.card", _of(name, version), _sha(mv.description), _sha(description), mv.run_id)


def _sha(text: str | None) -> str | None:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest() if text else None


# What the card lists of its version's audit entries: the registry's writes and the gate, not every predict batch.
CARD_ACTIONS = ("version.", "alias.", "gate.")


def audit_of_version(name: str, version: str) -> list[dict]:
    """The audit records of one version (its writes, the gate's verdict on it, alias moves to or from it)."""
    out = []
    for r in audit.records(name):
        b = r.body
        mine = b["resource"] == _of(name, version) or (
            b["resource"].startswith(f"{_model(name)}@") and str(version) in (b["before"], b["after"])
        )
        if mine and b["action"].startswith(CARD_ACTIONS):
            out.append({"seq": b["seq"], "at": b["at"], "action": b["action"], "who": b["who"], "hash": r.hash})
    return out


def promote(
    name: str, version: str, reason: str, required_card: Callable[[str], list[str]] | None = None
) -> Version | None:
    """Moves `champion` by hand and records on the version who moved it, when, why and from which version.

    Returns the previous champion. Refuses versions whose registration never completed, and, as the gate does,
    versions whose card leaves a key of required_card(dataset) (register.require_card_fields) undeclared."""
    if not reason.strip():
        raise ValueError("promote needs --reason: why this version replaces the champion")
    from mlflow.exceptions import MlflowException

    try:
        target = get_version(name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ValueError(f"model {name} has no version {version}: see the registry (medflow ui)") from None
    if not target.complete:
        raise ValueError(
            f"{name} v{version} is not a complete registration (state {target.tags.get(STATE, 'unknown')}): "
            "rerun `medflow step register` for its training run first"
        )
    if required_card is not None:
        _refuse_undeclared(name, version, target.run_id, required_card)
    previous = version_by_alias(name, "champion")
    if previous and previous.version == target.version:
        raise ValueError(f"{name} v{version} is already the champion")
    before = aliases(name)
    tags = {
        "medflow.promoted_by": getpass.getuser(),
        "medflow.promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "medflow.promoted_reason": reason.strip(),
        "medflow.previous_champion": previous.version if previous else "none",
    }
    set_version_tags(name, version, tags)
    set_alias(name, "champion", version)
    record_move(name, previous.version if previous else None, version, "promote", reason.strip())
    drop_alias(name, "challenger", version)
    refresh_cards(name, before)
    return previous


def _refuse_undeclared(name: str, version: str, run_id: str | None, required_card: Callable[[str], list[str]]) -> None:
    """The version's own card is what a reviewer reads: params filled in since do not declare anything for it."""
    import json
    import tempfile

    c = client()
    card = {}
    if run_id and CARD in {f.path for f in c.list_artifacts(run_id)}:
        with tempfile.TemporaryDirectory() as tmp:
            card = json.loads(Path(c.download_artifacts(run_id, CARD, tmp)).read_text())
    declared = card.get("declared") or {}
    missing = [k for k in required_card((card.get("data") or {}).get("dataset", "")) if not declared.get(k)]
    if missing:
        fields = ", ".join(f"register.card.{k}" for k in missing)
        raise ValueError(f"{name} v{version}: {fields} empty (register.require_card_fields)")


def accept_files(name: str, version: str, reason: str) -> str:
    """Records the files of a version registered without a digest as they are now, with who, when and why; returns
    the digest. A version that has one keeps it: files that differ from it were changed after registration."""
    import tempfile

    if not reason.strip():
        raise ValueError("accept-files needs --reason: what review found these files to be the registered model")
    target = get_version(name, version)
    if integrity.DIGEST_TAG in target.tags:
        raise ValueError(f"{name} v{version} already has the digest recorded at registration: nothing to accept")
    with tempfile.TemporaryDirectory() as tmp:
        # From the logged model the version points at: through models:/NAME/VERSION it would be refused unseen.
        digest = integrity.files_digest(integrity.download(target.source, Path(tmp)))
    tags = {
        integrity.DIGEST_TAG: digest,
        "medflow.files_accepted_by": getpass.getuser(),
        "medflow.files_accepted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "medflow.files_accepted_reason": reason.strip(),
    }
    set_version_tags(name, version, tags)
    return digest


HISTORY = "medflow.history."  # + zero-padded sequence number: model-level tags sort in the order of the moves


def history(name: str) -> list[dict]:
    """Every recorded move of `champion`, oldest first, from the registered model's own tags."""
    import json

    from mlflow.exceptions import MlflowException

    try:
        tags = client().get_registered_model(name).tags
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ValueError(f"the registry has no model {name} (register.model_name; medflow ui lists them)") from None
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(HISTORY))]


def record_move(
    name: str, previous: str | None, version: str, how: str, reason: str, report: str | None = None
) -> dict | None:
    """Appends one move of `champion` to the model's history (tags live with the registry, not with a clone).

    Idempotent for a move already recorded last, so a register finishing a killed registration adds nothing twice.
    Call under model_lock: the next sequence number is read, then written."""
    import json

    past = history(name)
    if past and past[-1]["to"] == str(version):
        return None
    if previous is not None and str(previous) == str(version):
        # A registration killed after its alias moved: the alias no longer says what it replaced; the history does.
        previous = past[-1]["to"] if past else None
    entry = {
        "n": len(past) + 1,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "from": str(previous) if previous is not None else None,
        "to": str(version),
        "how": how,
        "who": getpass.getuser(),
        "reason": reason,
    }
    if report:
        entry["report"] = report
    value = json.dumps(entry, separators=(",", ":"))
    assert_clean(value, f"history of {name}")
    client().set_registered_model_tag(name, f"{HISTORY}{entry['n']:06d}", value)
    audit.append(name, "history.append", f"{_model(name)}#{HISTORY}{entry['n']:06d}", None, entry)
    return entry


class NothingToRollBack(ValueError):
    """str() says why; `medflow_fix` what to do instead (the command line prints both on one line)."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.medflow_fix = fix


def rollback(name: str, reason: str) -> tuple[str, str]:
    """Moves `champion` back to the version it replaced, as the history records it; returns (from, to)."""
    current = version_by_alias(name, "champion")
    fix = f"nothing was moved; `medflow promote {name} VERSION --reason ...` moves champion to a version of your choice"
    if current is None:
        raise NothingToRollBack(f"model {name} has no champion to roll back", fix)
    # What the current champion replaced when it was promoted; a rollback's own entry is no promotion to undo.
    moves = [m for m in history(name) if m["to"] == current.version and m["from"] and m["how"] != "rollback"]
    if not moves:
        raise NothingToRollBack(
            f"{name} v{current.version} replaced no champion (see medflow history {name}): nothing to roll back to", fix
        )
    target = moves[-1]["from"]
    before = aliases(name)
    set_alias(name, "champion", target)
    record_move(name, current.version, target, "rollback", reason.strip() or f"rollback of v{current.version}")
    drop_alias(name, "challenger", target)
    refresh_cards(name, before)
    return current.version, target


def resolve(uri: str) -> tuple[str, Version]:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> (name, version); a clear error for anything else."""
    import re

    from mlflow.exceptions import MlflowException

    found = re.fullmatch(r"models:/([^/@]+)(?:@([\w-]+)|/(\d+))", uri.strip())
    if not found:
        raise ValueError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, number = found.groups()
    if alias:
        v = version_by_alias(name, alias)
        if v is None:
            raise ValueError(f"model {name} has no alias {alias}")
        return name, v
    try:
        return name, get_version(name, number)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ValueError(f"model {name} has no version {number}") from None
