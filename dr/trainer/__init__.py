"""The Accelerate training loop, its objective and callbacks."""
