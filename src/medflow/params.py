"""Typed, strict models of params.yaml: the single source of parameters.

A misspelt key fails at load with the path of the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator


def yaml_list(names: list[str]) -> str:
    """names as a YAML list to pass with -P: a name YAML would read as something else ("Unnamed: 0", "1", "null")
    is quoted."""
    return "[" + ", ".join(n if _PLAIN.fullmatch(n) and n.lower() not in _YAML_WORDS else json.dumps(n)
                           for n in names) + "]"  # fmt: skip


_PLAIN = re.compile(r"[A-Za-z_][\w.-]*(?: [\w.-]+)*")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventParams(_Section):
    """data.kind=events (docs/sequences.md): a long table of events (data.source) and a table of label rows, one per
    stay, each with its prediction time and outcome (data.target). Column names are MEDS-like by default."""

    labels: str | None = None  # the label table (CSV/Parquet under data/, or beside a built-in source's events)
    stay_id: str = "stay_id"  # in both tables; data.patient_id names the patient (a patient may have several stays)
    time: str = "time"  # event time (date-time text); reduced to hours since the stay's first event at validate
    code: str = "code"  # the variable measured
    value: str = "numeric_value"
    unit: str = "unit"
    prediction_time: str = "prediction_time"  # label table: the time the outcome is predicted at
    # variable -> {unit: [scale, offset]} into its first unit (canonical): a row in a unit not listed is quarantined.
    units: dict[str, dict[str, tuple[float, float]]] = Field(default_factory=dict)
    window_hours: float = Field(48.0, gt=0)  # observation window: the hours before the prediction time the model sees
    # What the outcome means: an event within this many hours after the prediction time (recorded on the card; the
    # label table holds the outcome already decided over it).
    horizon_hours: float = Field(24.0, gt=0)
    bin_hours: float = Field(1.0, gt=0)  # width of the regular grid's bins
    # An event after its stay's prediction time is leakage: stop (default) names the variable and count; drop
    # quarantines such events with their reason.
    after_prediction: Literal["stop", "drop"] = "stop"
    chunk_stays: int = Field(2000, ge=1)  # stays gridded at a time: memory bounded by a chunk, not the cohort


class SignalParams(_Section):
    """data.kind=signals (docs/sequences.md): data.source is a manifest of waveform files (DICOM Waveform, .dcm, or
    WFDB records, .hea), one row per record with its label (data.target) and patient (data.patient_id)."""

    path_column: str = "path"  # relative paths are relative to the manifest's folder
    leads: list[str] = Field(default_factory=list)  # the leads the model reads, in order; empty: the first record's
    rate_hz: float = Field(100.0, gt=0)  # every record is resampled to this rate
    seconds: float = Field(10.0, gt=0)  # and cut to this long from its start (a shorter record is quarantined)
    flat_std: float = Field(1e-3, ge=0)  # a lead whose SD (in its units) is below this is flat: quarantined


class DataParams(_Section):
    kind: Literal["tabular", "image", "events", "signals"] = "tabular"
    # What the target is (medflow.tasks): classes to tell apart, a number to estimate, or a time to an event.
    task: Literal["classification", "regression", "survival", "segmentation"] = "classification"
    # tabular: a CSV/Parquet path (relative to the project root) or a built-in demo name (medflow.data.sources).
    # image: a manifest CSV (file path, label, optional patient id), an MNIST-format idx folder, a CIFAR-10
    # "python version" batch folder, or a built-in image demo (digits, fashion_mnist).
    source: str = "data/breast_cancer.csv"
    target: str = "diagnosis"
    patient_id: str | None = None
    # Survival only: the follow-up time (any unit, read as numbers are) and the event column (1 event, 0 censored,
    # or the table's words with event_value the word meaning an event). The event is the target (data.target is
    # set to it); neither is ever a feature.
    time: str | None = None
    event: str | None = None
    event_value: str | int | None = None
    # Direct identifiers: never features, never logged, dropped by `clean`.
    identifiers: list[str] = Field(default_factory=list)
    # Makes a binary target out of a multi-valued column: this value is 1, every other value 0.
    positive_class: str | int | None = None
    # image manifests: the column holding file paths (relative paths are relative to the manifest's folder).
    image_column: str = "path"
    # Keep only the first N rows of the source (quick runs on large image sets); null keeps all.
    max_rows: int | None = Field(None, ge=1)
    # Columns dropped as the table is read, before anything looks at them: never validated, profiled or logged.
    exclude: list[str] = Field(default_factory=list)
    # CSV field delimiter and text encoding; null sniffs them from the file.
    delimiter: str | None = Field(None, min_length=1, max_length=1)
    encoding: str | None = None
    # Folders besides the project's data/ that data.source and image manifest paths may point into.
    allowed_roots: list[str] = Field(default_factory=list)
    # Segmentation (docs/segmentation.md): the manifest's mask column (image_column holds the images); the label
    # values a mask may hold, 0 (background) included; the voxel spacing in mm every case is resampled to, after
    # reorientation to RAS (null: the first training case's); the intensity window clipped to before scaling to
    # [0, 1] (null: the training split's 0.5th and 99.5th percentiles).
    mask_column: str = "mask"
    labels: list[int] = Field(default_factory=lambda: [0, 1], min_length=2)
    spacing: list[float] | None = Field(None, min_length=2, max_length=3)
    window: tuple[float, float] | None = None
    events: EventParams = Field(default_factory=EventParams)  # data.kind=events only
    signals: SignalParams = Field(default_factory=SignalParams)  # data.kind=signals only

    @field_validator("positive_class", mode="before")
    @classmethod
    def _boolean_label(cls, value: object) -> object:
        # YAML reads an unquoted True or FALSE as a boolean, which pydantic would turn into the label 1 or 0.
        return str(value).lower() if isinstance(value, bool) else value

    def positive_label(self, classes: list[str]) -> str | None:
        """positive_class as the target spells it: the class equal to it, else the one class equal to it but for case
        (`-P data.positive_class=True` for a column of True/False, or TRUE/FALSE); None when no class is."""
        if self.positive_class is None:
            return None
        wanted = str(self.positive_class)
        if wanted in classes:
            return wanted
        alike = [c for c in classes if c.casefold() == wanted.casefold()]
        return alike[0] if len(alike) == 1 else None


class ValidateParams(_Section):
    # Width added on each side of the inferred numeric range, as a fraction of the robust (p0.5..p99.5) range.
    range_margin: float = Field(2.0, ge=0)
    # Allowed rise of a column's null rate above the reference rate before the batch is rejected.
    null_rate_slack: float = Field(0.1, ge=0, le=1)
    # Row count band of later batches, as factors of the reference row count.
    row_count_band: tuple[float, float] = (0.1, 10.0)
    # A category needs this many reference rows to enter the allowed set; rarer values are quarantined.
    category_min_count: int = Field(2, ge=1)
    # A string column whose distinct values exceed this fraction of rows is free text: checked for presence only.
    free_text_ratio: float = Field(0.5, gt=0, le=1)
    # Share of non-null values that must parse as numbers before a numeric column counts as the wrong type.
    type_mostly: float = Field(0.9, gt=0, le=1)
    # A single feature whose univariate ROC-AUC reaches this is flagged as suspected target leakage.
    leakage_auc: float = Field(0.995, gt=0.5, le=1)
    # A numeric feature named as a follow-up time (time, lenfol, days to death, ...) whose univariate ROC-AUC reaches
    # this is stopped as a suspected follow-up time: a survival table forced into a binary target.
    followup_auc: float = Field(0.6, gt=0.5, le=1)
    # Columns whose suspected leakage is accepted: they stay features, and the decision is recorded in the summary.
    accept_leakage: list[str] = Field(default_factory=list)
    # A suite is inferred only from a batch of at least this many rows.
    min_rows: int = Field(30, ge=1)
    # Numbers of at least this magnitude (and inf) are quarantined: no measurement is that large.
    max_abs: float = Field(1e15, gt=0)
    # Profile counts below this are shown as "<k" so that no small group can be singled out.
    small_count: int = Field(5, ge=1)
    # The run stops when the quarantine takes more than this share of the rows, or of one category or one tenth of a
    # numeric column's range (improbably more than of the whole table): a model trained on what is left is biased.
    max_quarantine: float = Field(0.1, ge=0, le=1)
    # A table file larger than this (MB) is validated in chunks of chunk_rows rows, in memory that does not grow with
    # it: its suite, identifier and leakage screens and profile read a uniform sample of sample_rows rows, every row
    # is checked. A property of the file, not of the machine, so that every machine validates it the same way.
    stream_above_mb: float = Field(512, ge=0)
    chunk_rows: int = Field(200_000, ge=1)
    sample_rows: int = Field(500_000, ge=1)
    # Great Expectations' Data Docs (HTML) of each validation; importing GX to build them costs seconds a process.
    data_docs: bool = True


class CleanParams(_Section):
    # Environment variable holding the salt for the patient-id hash; demos fall back to a fixed demo salt.
    salt_env: str = "MEDFLOW_SALT"


class SplitParams(_Section):
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    # patient: random by patient (stratified); time: the earliest patients by time_column train, the latest test
    # (the column is never a feature); site: the sites in test_sites (of site_column) are the test split.
    by: Literal["patient", "time", "site"] = "patient"
    time_column: str | None = None
    site_column: str | None = None
    test_sites: list[str] = Field(default_factory=list)

    @property
    def column(self) -> str | None:
        """The column split.by=time or site reads, or None (split by patient)."""
        return {"time": self.time_column, "site": self.site_column}.get(self.by)

    @property
    def unplaced(self) -> tuple[str, str] | None:
        """(column, by) for split.by=time or site: whose rows the split cannot place, by its own reading."""
        return None if self.column is None else (self.column, self.by)

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitParams:
        if self.val + self.test >= 0.9:
            raise ValueError(f"split.val + split.test = {self.val + self.test:.2f} leaves too little to train on")
        if self.by == "time" and not self.time_column:
            raise ValueError("split.by=time needs split.time_column (a date or number column of the table)")
        if self.by == "site" and not (self.site_column and self.test_sites):
            raise ValueError("split.by=site needs split.site_column and split.test_sites (the held-out sites)")
        return self


class TrainParams(_Section):
    model: Literal[
        "tabular_mlp",
        "xgboost",
        "mnist_mlp",
        "cifar_convnet",
        "resnet_small",
        "unet",
        "gru",
        "lstm",
        "transformer",
        "cnn1d",
    ] = "tabular_mlp"
    # Survival: the times (in the time column's units) the bundle answers survival at, and evaluate measures AUC,
    # Brier score and calibration at; null: the training split's event-time quartiles (tasks/survival.py). Under
    # train, since the model carries them: changing them retrains, and DVC's train stage sees them in its section.
    horizons: list[float] | None = None
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    dropout: float = Field(0.1, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0)  # Adam learning rate
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(20, ge=1)  # epochs without a better validation loss before stopping
    class_weights: Literal["none", "balanced"] = "balanced"
    device: str = "auto"  # "auto" picks CUDA when present, else CPU
    deterministic: bool = True
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # Classifiers: a recalibration of the probabilities fitted on the validation split and bundled with the model
    # (temperature: any classes; logistic: binary); evaluate, the gate, the card and predict see the recalibrated model.
    recalibrate: Literal["none", "temperature", "logistic"] = "none"
    loss: Literal["mse", "huber"] = "mse"  # regression only, on the target standardised on the training split
    augment_flip: bool = False  # random horizontal flips, batched on the device (images)
    augment_translate: int = Field(0, ge=0)  # random shifts of up to this many pixels (images)
    amp: bool = True  # mixed precision on CUDA: bf16 where supported, else fp16 with a grad scaler
    channels_last: bool = True  # memory format for conv nets on CUDA
    compile: bool = False  # torch.compile the model
    checkpoint_every: int = Field(1, ge=1)  # epochs between resumable checkpoints
    # Seconds between checkpoints (also the first epoch and the last): a kill redoes at most this much training.
    checkpoint_interval_s: float = Field(60.0, ge=0)
    # torch CPU threads; null: 1 for the MLPs (their matrices are too small to share), the process's cores for
    # conv nets (divided among torchrun's ranks).
    threads: int | None = Field(None, ge=1)
    # Images: MB of decoded pixels the pipeline may hold at once; null: all of them. Set, validate and clean decode
    # and copy in chunks within it, and a dataset larger than it trains streamed from artifacts/clean/images.npy
    # (docs/images.md). Under train, as the loader it picks is training's; validate and clean read it too.
    memory_budget_mb: float | None = Field(None, gt=0)
    resume: bool = True  # continue from artifacts/.checkpoints/train.pt when it matches this configuration
    mixup: float = Field(0.0, ge=0)  # Beta(a, a) of the mixing weight of mixup, batched on the device; 0: off
    cutmix: float = Field(0.0, ge=0)  # images: Beta(a, a) of the area kept by cutmix; 0: off
    # resnet_small: channels of each stage (every stage after the first halves the image size), basic blocks per stage
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    blocks: int = Field(2, ge=1)
    # xgboost (gradient-boosted trees, docs/trees.md): most boosting rounds (patience: rounds without a lower
    # validation loss before it stops), then XGBoost's own names for the trees.
    n_estimators: int = Field(500, ge=1)
    max_depth: int = Field(4, ge=1)
    learning_rate: float = Field(0.1, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    # unet (MONAI's UNet, 2D or 3D by the data): channels per level, the stride between levels (one fewer), residual
    # units per block; trained on patches of patch_size voxels, patches_per_case per case and epoch, half of them
    # centred on foreground (MONAI's RandCropByPosNegLabel).
    unet_channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32, 64], min_length=2)
    unet_strides: list[PositiveInt] = Field(default_factory=lambda: [2, 2], min_length=1)
    unet_res_units: int = Field(1, ge=0)
    patch_size: list[PositiveInt] = Field(default_factory=lambda: [64, 64], min_length=2, max_length=3)
    patches_per_case: int = Field(4, ge=1)


class Dimension(_Section):
    """One axis of the search space: `choices` (any values, lists included), or a range `low`..`high` sampled on
    a log scale when `log` (integers when the train parameter is an integer)."""

    choices: list[Any] | None = Field(None, min_length=1)
    low: float | None = None
    high: float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> Dimension:
        bounds = (self.low, self.high)
        ranged = None not in bounds
        if (self.choices is None and not ranged) or (self.choices is not None and bounds != (None, None)):
            raise ValueError("give either choices: [...] or both low and high")
        if ranged and not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if ranged and self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


def _default_space() -> dict[str, Dimension]:
    return {
        "hidden": Dimension(choices=[[32], [64, 32], [128, 64]]),
        "dropout": Dimension(low=0.0, high=0.5),
        "lr": Dimension(low=1e-4, high=1e-2, log=True),
        "weight_decay": Dimension(low=1e-6, high=1e-2, log=True),
        "batch_size": Dimension(choices=[32, 64, 128]),
    }


def _default_tree_space() -> dict[str, Dimension]:
    return {
        "max_depth": Dimension(low=2, high=8),
        "learning_rate": Dimension(low=0.01, high=0.3, log=True),
        "min_child_weight": Dimension(low=0.5, high=20.0, log=True),
        "subsample": Dimension(low=0.5, high=1.0),
        "colsample_bytree": Dimension(low=0.5, high=1.0),
        "reg_lambda": Dimension(low=1e-3, high=10.0, log=True),
    }


def _default_unet_space() -> dict[str, Dimension]:
    # No patch_size: its sizes are 2 or 3 by the data's dimensions (tune.unet_space may add choices that fit).
    return {
        "unet_channels": Dimension(choices=[[16, 32, 64], [32, 64, 128], [16, 32, 64, 128]]),
        "unet_res_units": Dimension(low=0, high=2),
        "lr": Dimension(low=1e-4, high=1e-2, log=True),
        "weight_decay": Dimension(low=1e-6, high=1e-2, log=True),
        "batch_size": Dimension(choices=[8, 16, 32]),
    }


class TuneParams(_Section):
    """`medflow tune`: an Optuna study over train.* on the train and validation splits only."""

    trials: int = Field(20, ge=1)  # finished trials the study should hold (a resumed study runs the rest)
    timeout_s: float | None = Field(None, gt=0)  # start no trial after this many seconds; null: no limit
    # Of the best epoch, reported per epoch for pruning; val_accuracy for classification, val_mae for regression,
    # val_c_index for survival, val_dice for segmentation.
    metric: Literal["val_loss", "val_accuracy", "val_mae", "val_c_index", "val_dice"] = "val_loss"
    pruner: Literal["median", "hyperband", "none"] = "median"
    # Study storage URL (sqlite:///..., postgresql+psycopg2://...); null: artifacts/tune/study.db. Never MLflow's.
    storage: str | None = None
    space: dict[str, Dimension] = Field(default_factory=_default_space)  # train.<key> -> its dimension
    # The space searched instead when train.model is xgboost (gradient-boosted trees).
    tree_space: dict[str, Dimension] = Field(default_factory=_default_tree_space)
    # The space searched instead when train.model is unet (segmentation). A unet_channels of another depth than
    # train.unet_strides brings strides of 2 between its levels, unless the space searches unet_strides too.
    unet_space: dict[str, Dimension] = Field(default_factory=_default_unet_space)

    @model_validator(mode="after")
    def _train_keys(self) -> TuneParams:
        fixed = {"device", "deterministic", "amp", "channels_last", "compile", "checkpoint_every", "resume"}
        for key, space in (("space", self.space), ("tree_space", self.tree_space), ("unet_space", self.unet_space)):
            unknown = sorted(set(space) - (set(TrainParams.model_fields) - fixed))
            if unknown:
                raise ValueError(
                    f"tune.{key}: {', '.join(unknown)} cannot be searched (keys are tunable train.* names)"
                )
        return self

    def space_for(self, model: str) -> dict[str, Dimension]:
        return {"xgboost": self.tree_space, "unet": self.unet_space}.get(model, self.space)


class EvaluateParams(_Section):
    # Classification: roc_auc, pr_auc, accuracy, balanced_accuracy, f1; regression: mae (its default), rmse, r2;
    # survival: c_index (Harrell's, its only primary).
    primary_metric: Literal[
        "roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "f1", "mae", "rmse", "r2", "c_index", "mean_dice"
    ] = "roc_auc"
    # Resamples of test patients (rows when there is no patient id) behind every 95% interval.
    n_boot: int = Field(1000, ge=100)
    # Binary tasks: the decision threshold is chosen on the validation split, by Youden's J or as the highest
    # threshold reaching target_sensitivity there.
    threshold: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = Field(0.9, gt=0, le=1)
    calibration_bins: int = Field(10, ge=2)  # equal-width probability bins of the ECE and the reliability diagram
    # Columns of the cleaned table whose groups get their own metrics; numeric ones need edges in subgroup_bins.
    subgroups: list[str] = Field(default_factory=list)
    subgroup_bins: dict[str, list[float]] = Field(default_factory=dict)  # column -> edges, groups are [a, b)
    # A group with fewer patients than this shows as "<k" only: no metrics, in every report and plot.
    min_group_patients: int = Field(10, ge=1)
    # Segmentation: the normalised surface Dice counts boundary voxels within this distance (mm) as agreeing.
    nsd_tolerance_mm: float = Field(1.0, gt=0)
    # Binary tasks: threshold probabilities (from, to, step) of the decision curve (net benefit).
    dca_thresholds: tuple[float, float, float] = (0.05, 0.95, 0.05)
    # Tabular models: permutation importance rescores this many test rows (a seeded sample) once per input column,
    # so its cost is columns x rows predictions plus one paired bootstrap of columns + 1 models; 0 turns it off.
    importance_rows: int = Field(2000, ge=0)
    # Image classifiers: test images drawn with their IntegratedGradients saliency map for the card, picked by rank
    # (most confident correct, most confident wrong, least confident, in turn); 0: none.
    saliency_cases: int = Field(3, ge=0)

    @field_validator("dca_thresholds")
    @classmethod
    def _dca_range(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        low, high, step = value
        if not (0 < low <= high < 1 and step > 0):
            raise ValueError("give [from, to, step] with 0 < from <= to < 1 and step > 0")
        return value


class TreeBaselineParams(_Section):
    """The gate's gradient-boosted-tree baseline (tables): XGBoost on the train split, stopped early on val."""

    n_estimators: int = Field(300, ge=1)  # most boosting rounds
    early_stopping_rounds: int = Field(20, ge=1)  # rounds without a lower validation loss before it stops
    max_depth: int = Field(4, ge=1)
    learning_rate: float = Field(0.1, gt=0, le=1)
    max_rows: int = Field(100_000, ge=100)  # a larger train split is subsampled (seeded) to this many rows
    threads: int = Field(1, ge=1)  # XGBoost threads; the same trees at any count, one is enough for its cost


class GateParams(_Section):
    """How a version earns `champion`: floors, then a paired patient bootstrap against the champion or baselines."""

    # Floor on test sensitivity at the threshold chosen on validation (binary tasks); null: no floor.
    min_sensitivity: float | None = Field(None, ge=0, le=1)
    # superiority: the 95% CI of delta = primary(candidate) - primary(champion), on the same test patients, must lie
    # above 0 (a tie never promotes); non_inferiority: its lower bound must lie above -margin.
    test: Literal["superiority", "non_inferiority"] = "superiority"
    margin: float = Field(0.01, ge=0, le=1)  # primary-metric units; used by non_inferiority only
    # With no champion, the candidate is compared the same way with the best baseline (majority class, logistic
    # regression), by non-inferiority: a network that only matches a linear model is still worth a first champion.
    # Primary-metric units, 0.05 a usual margin for ROC-AUC; for a metric better lower (MAE, in the target's units)
    # this and margin are fractions of the reference's value (docs/tasks.md).
    baseline_margin: float = Field(0.05, ge=0, le=1)
    # No subgroup shown in both models' reports may lose more than this much of the primary metric.
    subgroup_tolerance: float = Field(0.05, ge=0, le=1)
    n_boot: int = Field(1000, ge=100)  # paired resamples of test patients
    # A model at validate.leakage_auc test ROC-AUC or more that loses this much of it when one feature is shuffled
    # rests its near-perfect score on that feature: a suspected leak, which never promotes (validate.accept_leakage
    # accepts it). Features that leak only together (a date beside its outcome's) pass validate's one-column screen.
    leak_drop: float = Field(0.1, gt=0, le=1)
    # Tables: gradient-boosted trees beside the other baselines on the same test patients; null: left out.
    tree_baseline: TreeBaselineParams | None = Field(default_factory=TreeBaselineParams)
    # A baseline the candidate must beat by superiority (CI of delta above 0), champion or not, e.g.
    # gradient_boosted_trees; null: none beyond the comparison above.
    require_superiority_over: str | None = None


# A floor for a higher-is-better primary metric, a ceiling for a lower-is-better one (regression's MAE, in the
# target's units): any finite number.
Floor = Annotated[float, Field(allow_inf_nan=False)]


class CardParams(_Section):
    """What the model is for, declared by the people responsible for it (TRIPOD+AI items 3, 5, 6): the top of the
    model card. Free text about the cohort, never a patient's value."""

    # The dataset (data.source's file stem or demo name) these declarations describe: a run on another table shows
    # none of them, rather than another table's; null: any dataset.
    dataset: str | None = None
    intended_use: str | None = None  # the clinical question and the decision the output informs
    population: str | None = None  # who the model applies to (eligibility), and who it does not
    setting: str | None = None  # care setting and where the data came from (sites, dates)
    intended_users: str | None = None  # who acts on the output
    outcome: str | None = None  # the outcome's definition, as the target column records it
    horizon: str | None = None  # when the outcome is assessed (at diagnosis, within 30 days, ...)
    limitations: list[str] = Field(default_factory=list)  # known limitations, added to the ones medflow measures
    # TRIPOD+AI items medflow cannot fill (ethics, funding, protocol, ...): item -> where it is reported, or
    # "n/a: why" when it does not apply; the card's checklist counts them as declared.
    tripod: dict[str, str] = Field(default_factory=dict)

    @field_validator("tripod", mode="before")
    @classmethod
    def _string_items(cls, value: object) -> object:
        # DVC hashes the register section with its keys sorted: an unquoted item number (YAML's int) beside "18a"
        # would fail the run at register's record, long after validate, so it stops here in one line.
        numbers = [k for k in value if not isinstance(k, str)] if isinstance(value, dict) else []
        if numbers:
            raise ValueError(f'quote the item numbers {", ".join(map(str, numbers))} ("14": ...): keys must be text')
        return value


CARD_FIELDS = tuple(k for k in CardParams.model_fields if k not in ("dataset", "tripod"))


class RegisterParams(_Section):
    model_name: str = "medflow-breast-cancer"
    # register.card.* keys a version needs filled before it may become champion: one list for every table, or one per
    # dataset ({breast_cancer: [intended_use, ...]}, keyed as min_primary), so another table's first run is never
    # refused for declarations written for this one; [] (or absent): none.
    require_card_fields: list[Literal[CARD_FIELDS]] | dict[str, list[Literal[CARD_FIELDS]]] = Field(  # type: ignore[valid-type]
        default_factory=list
    )
    # What the model is for, declared (the top of the card). Under register, whose DVC stage lists this section, so
    # a params file without it (an example's, a user's older one) still runs: DVC stops on a listed key it lacks.
    card: CardParams = Field(default_factory=CardParams)
    # A version becomes champion only when its test primary metric reaches this floor (stays under this ceiling for
    # a lower-is-better metric such as mae): one number for every table,
    # or one per dataset ({breast_cancer: 0.95}, keyed as data.source's file stem or demo name), so that a floor set
    # for one table never refuses another's first champion unseen; null: no floor...
    min_primary: Floor | dict[str, Floor] | None = None
    # ...and passes the paired gate against the champion (or, with none yet, the baselines).
    gate: GateParams = Field(default_factory=GateParams)
    # never: this run is exploratory and registers as `challenger` at most (as does any `dvc exp run`);
    # `medflow promote NAME VERSION --reason ...` then moves `champion` by hand.
    promote: Literal["auto", "never"] = "auto"

    def required_card(self, dataset: str) -> list[str]:
        """require_card_fields as it applies to this dataset."""
        fields = self.require_card_fields
        return list(fields.get(dataset, []) if isinstance(fields, dict) else fields)

    def floor(self, dataset: str) -> float | None:
        """min_primary as it applies to this dataset (medflow.data.sources.dataset_name)."""
        return self.min_primary.get(dataset) if isinstance(self.min_primary, dict) else self.min_primary


class FlowParams(_Section):
    """How `medflow run` orchestrates the steps (Prefect); no DVC stage reads this section."""

    # Extra attempts of a task that failed on a transient error (MLflow and DVC writes: train, register, the DVC
    # record); bad input or params never retry.
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(5.0, ge=0)  # seconds before the first retry; doubled before each next one
    timeout_s: float = Field(3600.0, gt=0)  # seconds a step other than train may run before it is failed
    train_timeout_s: float = Field(86400.0, gt=0)  # seconds the train step may run before it is failed


class MonitorParams(_Section):
    """`medflow monitor` (flows/monitor.py): a new batch against the champion's training reference (aggregates)."""

    bins: int = Field(10, ge=2)  # quantile bins per numeric feature (and score bins), merged until each has small_count
    min_rows: int = Field(50, ge=1)  # a smaller batch is reported but not judged: no retraining on a handful of rows
    psi_threshold: float = Field(0.2, gt=0)  # population stability index at which a feature (or the score) drifted,
    ks_pvalue: float = Field(0.01, gt=0, lt=1)  # when its test (binned KS; chi-square for categories) is below this too
    null_rate_change: float = Field(0.1, gt=0, le=1)  # rise of a feature's null rate (fraction of rows) that is drift
    min_drifted_features: int = Field(1, ge=1)  # retrain when at least this many features drifted (or the score did)
    # Labelled batch: retrain when the upper 95% bound of the primary metric lies below this; null: no floor. A
    # ceiling for a metric better lower (MAE, in the target's units): retrain when the lower bound lies above it.
    performance_floor: float | None = Field(None, allow_inf_nan=False)
    # Opt-in: on drift a labelled batch becomes a new file under data/batches/ (DVC records it) and the model retrains.
    update: bool = False
    deployment: str = "medflow-pipeline/medflow-train"  # Prefect deployment to trigger; unreachable: run in-process


# `register` shadows ABCMeta.register on the class, which pydantic warns about; nothing here calls that.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class Params(_Section):
        seed: int = 42
        data: DataParams = Field(default_factory=DataParams)
        validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
        clean: CleanParams = Field(default_factory=CleanParams)
        split: SplitParams = Field(default_factory=SplitParams)
        train: TrainParams = Field(default_factory=TrainParams)
        evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
        register: RegisterParams = Field(default_factory=RegisterParams)
        flow: FlowParams = Field(default_factory=FlowParams)
        tune: TuneParams = Field(default_factory=TuneParams)
        monitor: MonitorParams = Field(default_factory=MonitorParams)

        model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

        @model_validator(mode="before")
        @classmethod
        def _task_primary(cls, raw: Any) -> Any:
            # A regression run that names no primary metric is judged by MAE, a survival run by Harrell's C-index,
            # not by the classification default; a survival run's target is its event column.
            task = (raw.get("data") or {}).get("task") if isinstance(raw, dict) else None
            if task not in ("regression", "survival", "segmentation"):
                return raw
            evaluate = raw.get("evaluate") or {}
            if isinstance(evaluate, dict) and "primary_metric" not in evaluate:
                primary = {"regression": "mae", "survival": "c_index", "segmentation": "mean_dice"}[task]
                raw = {**raw, "evaluate": {**evaluate, "primary_metric": primary}}
            if task == "survival" and raw["data"].get("event") is not None:
                raw = {**raw, "data": {**raw["data"], "target": raw["data"]["event"]}}
            return raw

        def as_dict(self) -> dict[str, Any]:
            return self.model_dump(mode="json", by_alias=True)

        def digest(self) -> str:
            return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


class ParamsError(ValueError):
    pass


def read_yaml(text: str) -> Any:
    """YAML 1.2, as DVC reads and writes params.yaml (PyYAML's 1.1 reads `3e-4` as a string and `no` as False)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` with the value read as YAML, so lists and numbers keep their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {text!r} is not of the form section.key=value")
    return key.strip().split("."), read_yaml(raw) if raw.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    merged = json.loads(json.dumps(raw))
    for text in overrides:
        keys, value = parse_override(text)
        node = merged
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {text!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return merged


def from_dict(raw: dict[str, Any], origin: str = "params") -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = [f"{origin}: {len(exc.errors())} invalid parameter(s)"]
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {where}: {err['msg']}")
        raise ParamsError("\n".join(lines)) from None


def tuned_file(path: Path) -> Path:
    """Where `medflow tune` writes the best train.* values for a params file: params.yaml -> params.tuned.yaml."""
    return path.with_name(f"{path.stem}.tuned.yaml")


def _tuned(path: Path) -> dict[str, Any]:
    file = tuned_file(path)
    raw = (read_yaml(file.read_text()) or {}) if file.exists() else {}
    if (
        not isinstance(raw, dict)
        or set(raw) - {"train", "study"}
        or not all(isinstance(raw.get(k) or {}, dict) for k in ("train", "study"))
    ):
        raise ParamsError(f"{file}: holds only study: and train: sections (written by medflow tune); delete the rest")
    return raw


def tuned_values(path: Path) -> dict[str, Any]:
    """The train.* values of the tuned file beside params file `path` ({} when there is none)."""
    return dict(_tuned(path).get("train") or {})


def data_version(path: Path) -> str | None:
    """The data version DVC records beside params file `path` (data.dvc's md5 of data/), or None."""
    record = path.parent / "data.dvc"
    if not record.exists():
        return None
    outs = (read_yaml(record.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")


def study_record(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a study's tuned values are bound to: the pipeline (data kind, source, target; model) and the data version,
    of params `raw` (a params file's values, -P applied) read beside params file `path`."""
    data, train = raw.get("data") or {}, raw.get("train") or {}
    record = {f"data.{k}": data.get(k, getattr(DataParams(), k)) for k in ("kind", "source", "target")}
    return record | {"train.model": train.get("model", TrainParams().model), "data_version": data_version(path)}


def tuned_mismatch(path: Path, raw: dict[str, Any]) -> str | None:
    """Why the tuned values beside params file `path` do not apply to params `raw` (the file's values, -P applied,
    without the tuned layer), or None when they do: they hold for the pipeline and data version their study ran on."""
    tuned = _tuned(path)
    values, study = tuned.get("train") or {}, tuned.get("study") or {}
    if not values:
        return None
    if not study:
        return "it names no study (the study: section medflow tune writes): run medflow tune again"
    now = study_record(raw, path)
    if "model" in values:  # the study chose the model itself
        del now["train.model"]
    if study.get("data_version") is None or now["data_version"] is None:
        del now["data_version"]  # no DVC record of data/ beside the params file, then or now
    differ = [k for k in now if now[k] != study.get(k)]
    if not differ:
        return None
    then = ", ".join(f"{k}={study.get(k)}" for k in differ)
    this = ", ".join(f"{k}={now[k]}" for k in differ)
    return f"its study {study.get('name', '?')} ran on {then}; this run has {this}: run medflow tune for it"


def load(path: Path, overrides: list[str] | None = None, tuned: bool = True) -> Params:
    """params file, then its tuned train.* values (tuned_file; tuned=False skips them, and they apply only to the
    pipeline and data version of their study: tuned_mismatch), then -P overrides."""
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    raw = read_yaml(path.read_text()) or {}
    if tuned and (values := tuned_values(path)) and tuned_mismatch(path, apply_overrides(raw, overrides or [])) is None:
        raw["train"] = {**(raw.get("train") or {}), **values}
    return from_dict(apply_overrides(raw, overrides or []), origin=str(path))
