"""Training: losses, the LightningModule, and the train() entry point."""
