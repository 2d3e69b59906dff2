"""seglab: deep-learning image segmentation from raw data to a measured model."""

__version__ = "0.1.0"
