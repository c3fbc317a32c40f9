"""mnistbench: train and compare image classifiers on the MNIST family, honestly measured."""

__version__ = "0.1.0"
