"""The `rayft train` driver: launch.py runs each stage as a Ray Train TorchTrainer; worker.py is
each worker's side."""
