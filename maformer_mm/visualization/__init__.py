"""Pictures of predictions beside the ground truth, and training curves."""
