"""The zoo (`experiment=auto`): plan members from the prepared competition, then train them within a time budget.

- `plan.py`: the planner: which members (Hydra overrides, reason, estimated cost) fit the budget, in tiers.
- `run.py`: the runner: trains the plan on estimates corrected by what its members took, then the search, then
  more seeds; records `zoo.json` (and why the zoo stopped), and the member table printed after every run.
- `tune.py`: the search the budget left buys: Optuna trials, as members, on the best gradient-boosting family.
"""
