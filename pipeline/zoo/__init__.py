"""The zoo (`experiment=auto`): plan members from the prepared competition, then train them within a time budget.

- `plan.py`: the planner: which members (Hydra overrides, reason, estimated cost) fit the budget, in tiers.
- `run.py`: the runner: trains the plan, records `zoo.json`, and the member table printed after every run.
"""
