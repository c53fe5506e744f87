"""Hard-negative mining: choosing negatives from a ranking (pure) and the sources that rank."""
