"""What a converted network did: evaluation, summaries, ANN-vs-SNN analysis, energy, plots, tables."""
