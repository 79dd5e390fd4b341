"""`models:/NAME/VERSION` and `models:/NAME@ALIAS` as MLflow downloads them, checked against the version's digest.

An MLflow artifact-repository plugin (pyproject.toml: entry point `mlflow.artifact_repository`, scheme `models`).
MLflow registers plugins after its own schemes, so wherever medflow is installed, `mlflow.pyfunc.load_model` and
`mlflow models serve -m models:/...` fetch a version medflow registered through this class: the whole model is
copied into a fresh folder and compared with the digest recorded at registration (integrity.py) before MLflow
reads its MLmodel or runs its code. A version of a model medflow registers (its registered model carries medflow's
tags) loads only when medflow made it (integrity.check_made: its completed registration and its audit record).
Single files, logged models (`models:/m-...`) and the versions of other models download as MLflow's own class
downloads them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

from medflow.tracking import integrity


class VerifiedModelsArtifactRepository(ModelsArtifactRepository):
    def download_artifacts(self, artifact_path, dst_path=None, lineage_header_info=None):
        if artifact_path or getattr(self, "model_name", None) is None:
            return super().download_artifacts(artifact_path, dst_path, lineage_header_info)
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=self.registry_uri, registry_uri=self.registry_uri)
        tags = c.get_model_version(self.model_name, self.model_version).tags
        ours = any(k.startswith("medflow.") for k in c.get_registered_model(self.model_name).tags)
        if not ours and not any(k.startswith("medflow.") for k in tags):
            return super().download_artifacts(artifact_path, dst_path, lineage_header_info)
        integrity.check_made(self.model_name, str(self.model_version), tags, c)
        # A local store would hand back its own folder, which the next writer can change after the check.
        dst = dst_path or tempfile.mkdtemp(prefix="medflow-model-")
        root = super().download_artifacts(artifact_path, dst, lineage_header_info)
        integrity.check(self.model_name, str(self.model_version), tags, Path(root))
        return root
