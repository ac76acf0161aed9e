"""Train a linear regression through the Python API instead of a config file.

    python examples/train_linear_regression.py
"""

from mlharness.datasets import SyntheticRegressionDataset
from mlharness.metrics import MetricsWriter
from mlharness.models import LinearRegression
from mlharness.training import OutputManager, TrainingLoop

dataset = SyntheticRegressionDataset(n_samples=1000, n_features=20, seed=42)
model = LinearRegression(seed=42, use_gradient_descent=True, optimizer_config={"learning_rate": 0.01})
output_manager = OutputManager(experiment_name="my_experiment", base_dir="runs", maintain_index=True)
metrics_writer = MetricsWriter(
    output_dir=output_manager.get_metrics_dir(), experiment_name="my_experiment"
)
training_loop = TrainingLoop(
    model=model,
    dataset=dataset,
    metrics_writer=metrics_writer,
    epochs=50,
    batch_size=32,
    seed=42,
    checkpoint_dir=output_manager.get_checkpoint_dir(),
    checkpoint_frequency=10,
)
summary = training_loop.train()
metrics_writer.close(summary["final_metrics"])
output_manager.finish(summary)
print(f"Training completed: {summary['status']}")
print(f"Final loss: {summary['final_metrics']['loss']}")
print(f"Run directory: {output_manager.get_run_dir()}")
