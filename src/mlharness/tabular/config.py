"""The tabular experiment config: every field, its default, its limits and its help text.

One description per field feeds the validation messages, ``mlx run-experiment --help``'s
reference in docs/usage.md, and this file's readers. Datasets and models are tagged unions
on ``name``, so each one's ``params`` are checked against exactly its own fields.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlharness.config.paths import SafePathText, check_name
from mlharness.runs.describe import Headline, RunMetrics
from mlharness.runs.trackers import TrackerSettings


class _Strict(BaseModel):
    # Every float field must be finite: inf and nan are refused naming the field.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- datasets


class SyntheticParams(_Strict):
    n_samples: int = Field(default=1000, gt=0, description="Number of samples to generate.")
    n_features: int = Field(default=10, gt=0, description="Number of input features.")
    n_informative: int | None = Field(
        default=None,
        gt=0,
        description="Features that carry signal; the rest are noise (default: all).",
    )
    seed: int | None = Field(
        default=None, description="Seed for generation (default: the training seed)."
    )
    standardize: bool = Field(
        default=False,
        description="Scale features to zero mean and unit variance (training split stats).",
    )


class SyntheticRegressionParams(SyntheticParams):
    noise_std: float = Field(
        default=0.1, ge=0, description="Standard deviation of the Gaussian noise."
    )


class SyntheticClassificationParams(SyntheticParams):
    n_classes: int = Field(default=2, ge=2, description="Number of classes.")
    class_sep: float = Field(default=1.0, gt=0, description="Class separation (larger is easier).")


class BundledParams(_Strict):
    standardize: bool = Field(
        default=True,
        description="Scale features to zero mean and unit variance (training split stats).",
    )


class CsvParams(_Strict):
    target: str = Field(..., min_length=1, description="Name of the target column.")
    features: list[str] | None = Field(
        default=None, description="Feature columns to use (default: every column but the target)."
    )
    task: Literal["auto", "regression", "classification"] = Field(
        default="auto",
        description="'auto' treats a target with at most 20 distinct integer or text values "
        "as classes.",
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Field delimiter.")
    standardize: bool = Field(
        default=True,
        description="Scale features to zero mean and unit variance (training split stats).",
    )


class _DatasetBase(_Strict):
    path: SafePathText | None = Field(
        default=None, description="Path to the dataset file (csv), relative to the workspace root."
    )


class SyntheticRegressionConfig(_DatasetBase):
    name: Literal["synthetic_regression"] = Field(description="Dataset identifier.")
    params: SyntheticRegressionParams = Field(
        default_factory=SyntheticRegressionParams, description="Generator parameters."
    )


class SyntheticClassificationConfig(_DatasetBase):
    name: Literal["synthetic_classification"] = Field(description="Dataset identifier.")
    params: SyntheticClassificationParams = Field(
        default_factory=SyntheticClassificationParams, description="Generator parameters."
    )


class BundledConfig(_DatasetBase):
    name: Literal["iris", "wine", "breast_cancer", "digits", "diabetes"] = Field(
        description="A dataset bundled with scikit-learn (no download)."
    )
    params: BundledParams = Field(default_factory=BundledParams, description="Loading options.")


class CsvConfig(_DatasetBase):
    name: Literal["csv"] = Field(description="A local CSV file with a header row.")
    params: CsvParams = Field(description="Columns and parsing options.")

    @model_validator(mode="after")
    def _needs_path(self) -> CsvConfig:
        if not self.path:
            raise ValueError(
                "dataset.path is required for the csv dataset: set it to the CSV file, "
                "relative to the workspace root."
            )
        return self


DatasetConfig = Annotated[
    SyntheticRegressionConfig | SyntheticClassificationConfig | BundledConfig | CsvConfig,
    Field(discriminator="name"),
]

# ----------------------------------------------------------------------------- models


class _ModelParams(_Strict):
    seed: int | None = Field(
        default=None, description="Seed for weight initialisation (default: the training seed)."
    )
    optimizer_config: dict[str, Any] | None = Field(
        default=None,
        description="Per-model optimizer settings (learning_rate, optimizer_type and "
        "hyperparameters such as beta1 or momentum); they override the training section.",
    )


class LinearRegressionParams(_ModelParams):
    use_gradient_descent: bool = Field(
        default=False,
        description="Train by mini-batch gradient descent instead of the closed form.",
    )
    l2_regularization: float = Field(
        default=0.0,
        ge=0,
        description="L2 penalty λ in mean((Xw+b-y)^2) + λ‖w‖² (ridge regression).",
    )


class MLPParams(_ModelParams):
    layer_sizes: list[int] = Field(
        ..., min_length=2, description="Layer sizes from input to output, e.g. [10, 5, 1]."
    )
    activation: Literal["relu", "tanh", "sigmoid"] = Field(
        default="relu", description="Hidden-layer activation."
    )
    output_activation: Literal["sigmoid", "softmax"] | None = Field(
        default=None,
        description="None for regression, 'sigmoid' (binary) or 'softmax' (multi-class).",
    )
    init: Literal["auto", "he", "xavier"] = Field(
        default="auto",
        description="Weight initialisation: 'auto' is He for relu, Xavier otherwise.",
    )

    @field_validator("output_activation", mode="before")
    @classmethod
    def _none_string(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.lower() in ("none", "null", "") else value

    @field_validator("layer_sizes")
    @classmethod
    def _positive(cls, sizes: list[int]) -> list[int]:
        if any(s <= 0 for s in sizes):
            raise ValueError(f"every layer size must be a positive integer, got {sizes}.")
        return sizes

    @model_validator(mode="after")
    def _softmax_outputs(self) -> MLPParams:
        if self.output_activation == "softmax" and self.layer_sizes[-1] < 2:
            raise ValueError(
                "output_activation 'softmax' needs at least 2 outputs, but layer_sizes ends in "
                f"{self.layer_sizes[-1]}. Use 'sigmoid' for binary classification, or make the "
                "last layer size the number of classes."
            )
        return self


class _ModelBase(_Strict):
    architecture: str | None = Field(
        default=None, description="Architecture variant (reserved for future model families)."
    )


class LinearRegressionConfig(_ModelBase):
    name: Literal["linear_regression"] = Field(description="Model identifier.")
    params: LinearRegressionParams = Field(
        default_factory=LinearRegressionParams, description="Model parameters."
    )


class MLPConfig(_ModelBase):
    name: Literal["mlp"] = Field(description="Model identifier.")
    params: MLPParams = Field(description="Model parameters (layer_sizes is required).")


ModelConfig = Annotated[LinearRegressionConfig | MLPConfig, Field(discriminator="name")]

# ----------------------------------------------------------------------------- training, output


class TrainingConfig(_Strict):
    epochs: int = Field(default=10, gt=0, description="Number of training epochs.")
    batch_size: int = Field(default=32, gt=0, description="Mini-batch size.")
    learning_rate: float = Field(default=0.001, gt=0, description="Learning rate.")
    optimizer: Literal["adam", "sgd", "rmsprop", "adamw"] = Field(
        default="adam", description="Optimizer: adam, sgd, rmsprop or adamw."
    )
    seed: int = Field(
        default=42, description="Seed for shuffling, splitting and (by default) init."
    )
    validation_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Fraction of samples held out for validation (0 disables).",
    )
    shuffle: bool = Field(default=True, description="Reshuffle the training set every epoch.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Optimizer hyperparameters, e.g. {momentum: 0.9} or {beta1: 0.9, "
        "weight_decay: 0.01}.",
    )


class OutputConfig(_Strict, TrackerSettings):
    directory: SafePathText = Field(
        default="outputs", description="Output directory; must resolve within the workspace root."
    )
    save_checkpoints: bool = Field(
        default=True,
        description="Save model checkpoints, and the state a stopped run resumes from "
        "(without them a stopped run cannot resume).",
    )
    checkpoint_frequency: int = Field(
        default=1, gt=0, description="Save checkpoint_epoch_N every N epochs."
    )
    save_logs: bool = Field(default=True, description="Keep the console log in the run's logs/.")
    tensorboard: bool | None = Field(
        default=None,
        description="The older switch for TensorBoard: true adds `tensorboard` to "
        "output.trackers, false takes it out.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Reserved for extensions.")

    @model_validator(mode="after")
    def _tensorboard_switch(self) -> OutputConfig:
        if self.tensorboard is True and "tensorboard" not in self.trackers:
            self.trackers.append("tensorboard")
        elif self.tensorboard is False and "tensorboard" in self.trackers:
            self.trackers.remove("tensorboard")
        return self


# ----------------------------------------------------------------------------- the experiment


class ExperimentConfig(_Strict):
    """A tabular experiment: a dataset, a model, how to train it and where to write."""

    NOT_YET_SUPPORTED: ClassVar[dict[str, tuple[str, ...]]] = {
        "dataset": ("mnist", "cifar10", "cifar100", "imagenet"),
        "model": ("resnet", "vgg", "mobilenet", "efficientnet", "cnn"),
    }

    kind: Literal["tabular"] = Field(default="tabular", description="Experiment kind.")
    name: str = Field(..., min_length=1, description="Unique experiment name (a directory name).")
    description: str | None = Field(default=None, description="Human-readable description.")
    dataset: DatasetConfig = Field(description="What to train on; chosen by dataset.name.")
    model: ModelConfig = Field(description="What to train; chosen by model.name.")
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="Training hyperparameters."
    )
    output: OutputConfig = Field(
        default_factory=OutputConfig, description="Where and what to write."
    )

    @field_validator("name")
    @classmethod
    def _directory_name(cls, name: str) -> str:
        return check_name(name)  # type: ignore[no-any-return]

    @model_validator(mode="after")
    def _model_fits_dataset(self) -> ExperimentConfig:
        facts = dataset_facts(self.dataset)
        if facts is not None:
            problems = compatibility_problems(self.model, *facts)
            if problems:
                raise ValueError(" ".join(problems))
        return self


def dataset_facts(dataset: Any) -> tuple[str, int, int | None] | None:
    """(task, n_features, n_classes) when known from the config alone, else None (csv)."""
    if isinstance(dataset, SyntheticRegressionConfig):
        return ("regression", dataset.params.n_features, None)
    if isinstance(dataset, SyntheticClassificationConfig):
        return ("classification", dataset.params.n_features, dataset.params.n_classes)
    if isinstance(dataset, BundledConfig):
        from mlharness.tabular.datasets import BundledDataset

        bundled = BundledDataset(dataset.name)  # shapes are known without loading the data
        return (bundled.task, bundled.n_features, bundled.n_classes)
    return None


def compatibility_problems(
    model: Any, task: str, n_features: int, n_classes: int | None
) -> list[str]:
    """What stops ``model`` from training on data of this shape, as sentences saying what to set."""
    if isinstance(model, LinearRegressionConfig):
        if task == "classification":
            return [
                "linear_regression is a regression model but the dataset is a "
                f"classification dataset with {n_classes} classes. Use model 'mlp' with "
                "output_activation 'softmax' (or 'sigmoid' for two classes)."
            ]
        return []
    sizes = model.params.layer_sizes
    out = model.params.output_activation
    problems = []
    if sizes[0] != n_features:
        problems.append(
            f"model.params.layer_sizes starts with {sizes[0]} but the dataset has "
            f"{n_features} features: make the first layer size {n_features}."
        )
    if task == "regression" and out is not None:
        problems.append(
            f"output_activation '{out}' is for classification but the dataset is a regression "
            "dataset: set model.params.output_activation to null."
        )
    if task == "classification":
        if out is None:
            problems.append(
                "The dataset is a classification dataset: set model.params.output_activation "
                f"to 'softmax' with a last layer of {n_classes}"
                + (", or 'sigmoid' with a last layer of 1." if n_classes == 2 else ".")
            )
        elif out == "softmax" and sizes[-1] != n_classes:
            problems.append(
                f"model.params.layer_sizes ends with {sizes[-1]} but the dataset has "
                f"{n_classes} classes: make the last layer size {n_classes} for softmax."
            )
        elif out == "sigmoid" and (n_classes != 2 or sizes[-1] != 1):
            problems.append(
                "output_activation 'sigmoid' needs a two-class dataset and a last layer of 1 "
                f"(dataset has {n_classes} classes, last layer is {sizes[-1]}); use 'softmax' "
                f"with a last layer of {n_classes} otherwise."
            )
    return problems


# What `mlx history`, `mlx compare` and the curves show of a tabular run: one record per
# epoch; classifiers log accuracy, regressors r2 (a column nobody logged is left out).
TABULAR_METRICS = RunMetrics(
    kind="tabular",
    step_key="epoch",
    headline=(
        Headline("val_loss", "min"),
        Headline("loss", "min"),
        Headline("val_accuracy", "max"),
        Headline("val_r2", "max"),
    ),
)
