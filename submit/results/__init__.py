"""Working with the runs the store keeps: finding them by what they are (`query.py`: the fields of
`results list --where/--sort`), side by side (`compare.py`), and out to MLflow (`export.py`)."""
