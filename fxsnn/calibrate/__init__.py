"""Data steps: activation ranges, DA error calibration (Alg. 1), Stage 1 (Alg. 2), Stage 2 (Alg. 3), the fine-tuning loop."""
