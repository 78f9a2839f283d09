"""Files: saving and loading converted networks, loading user models, weights and data."""
