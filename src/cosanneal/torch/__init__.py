"""PyTorch adapter: an LRScheduler whose LR is a pure function of the update counter."""
