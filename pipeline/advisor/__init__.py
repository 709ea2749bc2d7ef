"""The training know-how, defined once: the rules of thumb (rules.py), the learning-curve diagnosis (diagnosis.py)
and the monitors' health thresholds (thresholds.py, read from conf/monitors/). Training enforces them, the report
only renders them."""
