"""Wire formats to arrays: images and transactions. Pure and blocking; shared with training."""
