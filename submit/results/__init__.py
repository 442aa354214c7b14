"""Working with the runs the store keeps: finding them by what they are (`query.py`: the fields of
`results list --where/--sort`), side by side (`compare.py`), as tables that fit the terminal
(`tables.py`: `results show`'s numbers, `compare` and `list`), and out to MLflow (`export.py`)."""
