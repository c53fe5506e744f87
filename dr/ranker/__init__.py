"""Cross-encoder rankers: listwise training (teachers for distillation) and AR2 co-training."""
