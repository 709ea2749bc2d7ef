"""The ensemble stage: combine the trained members' out-of-fold predictions, score every combination honestly.

members.py   read competition.json, folds.csv and every complete model folder; validate their alignment
methods.py   parameter-free combinations: mean, rank, geometric, vote
weighted.py  non-negative weights: Caruana ensemble selection (vectorized over rows) or scipy on the simplex
hillclimb.py weights that may be negative: greedy blending steps (the `hillclimbers` package's algorithm)
stacking.py  a meta-learner on the members' predictions (optionally with the tabular features)
levels.py    a second stack level on the members' OOF predictions, Caruana over both levels, and its guard
registry.py  which methods a config asks for and a task allows
scoring.py   members' CV and methods' nested (honest) CV, the choice of the best
saved.py     the chosen ensemble as a file (ensemble.skops), which `make predict` applies to new rows
submission.py  the test predictions in sample_submission.csv's format
outputs.py   the stage's files: leaderboard.csv, weights.json, correlation heatmap, provenance.json
"""
