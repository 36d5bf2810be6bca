"""What keeps train and serve the same: schema comparison, declared expectations, statistics and skew."""
