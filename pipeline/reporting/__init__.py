"""The training report (`python -m pipeline.report`): learning curves, diagnoses, model selection, advisor
findings and monitor tables, gathered from the model folders and the ensemble's files into one HTML page."""
