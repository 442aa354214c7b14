"""What `check` looks at in a table, against the task: one finding per problem, naming the column,
what it saw and the fix.  Errors where training would be meaningless (the run stops before
anything is uploaded), warnings where it may be intended.

    target      classification on a numeric target with many distinct values (> MAX_CLASSES, or
                most classes a single row): error, use task: regression
    leakage     a feature equal to the target, or a one-to-one copy of it (classification), or
                an exact linear copy (regression): error
    one-hot     a text column that would become more than MAX_ONEHOT one-hot features: error
    numbers     a mostly numeric column holding a few non-numeric values: warning (they are read
                as missing, not one-hot encoded into hundreds of features)
    identifier  a column unique per row (text, or consecutive integers): warning, data.drop
    constant    a column with a single value: warning, data.drop
    classes     a class with fewer rows than the split needs: warning
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.spec import Job

MAX_CLASSES = 50
MAX_ONEHOT = 200
MOSTLY_NUMERIC = 0.9  # share of a column's values that parse as numbers for it to be numeric
IDENTIFIER = 0.95  # share of distinct values (of the rows) that makes a column look like an id
MIN_ROWS_FOR_SHAPE = 20  # below this, "unique per row" or "mostly numeric" says nothing


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    message: str
    hint: str | None = None

    def line(self) -> str:
        return self.message + (f" ({self.hint})" if self.hint else "")


def numeric_view(series: pd.Series) -> tuple[pd.Series, pd.Series] | None:
    """(the values as numbers, the non-numeric values) of a text column that is mostly numeric
    (MOSTLY_NUMERIC of its non-missing values parse as numbers); None for any other column."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return None
    present = series.dropna()
    if len(present) < MIN_ROWS_FOR_SHAPE:
        return None
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().mean() < MOSTLY_NUMERIC:
        return None
    return pd.to_numeric(series, errors="coerce"), present[numbers.isna()]


def audit_table(frame: pd.DataFrame, features: list[str], target: str, job: Job, where: str) -> list[Finding]:
    findings: list[Finding] = []
    n = len(frame)
    y = frame[target]
    classification = job.task == "classification"
    if classification:
        findings += _target(y, target, where)
    for col in features:
        series = frame[col]
        findings += _leak(series, y, col, target, classification, where)
        view = numeric_view(series)
        if view is not None:
            bad = view[1]
            examples = ", ".join(repr(v) for v in pd.unique(bad.astype(str))[:3])
            findings.append(Finding(
                "warning", f"{where}: column '{col}' is numeric but for {len(bad)} value(s) such as "
                           f"{examples}: they are read as missing values, not as categories",
                "add them to data.na_values, or fix the file"))
            continue
        distinct = series.nunique(dropna=True)
        if distinct <= 1:
            findings.append(Finding("warning", f"{where}: column '{col}' has a single value: it "
                                               "carries nothing to learn from", "add it to data.drop"))
        elif _identifier(series, distinct, n):
            findings.append(Finding("warning", f"{where}: column '{col}' looks like an identifier "
                                               f"({distinct} distinct values in {n} rows)",
                                    "add it to data.drop unless it means something"))
        if _is_text(series) and distinct > MAX_ONEHOT and job.preprocess.categorical == "onehot":
            kept = int((series.value_counts() >= job.preprocess.min_frequency).sum())
            if kept > MAX_ONEHOT:
                findings.append(Finding(
                    "error", f"{where}: column '{col}' has {distinct} distinct text values: one-hot "
                             f"encoding would make {kept} features of it (more than {MAX_ONEHOT})",
                    "add it to data.drop, or keep frequent values only with preprocess.min_frequency"))
    if classification:
        findings += _small_classes(y, job, where)
    return findings


def _is_text(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def _identifier(series: pd.Series, distinct: int, n: int) -> bool:
    if n < MIN_ROWS_FOR_SHAPE or distinct < IDENTIFIER * n:
        return False
    if _is_text(series):
        return True
    if pd.api.types.is_integer_dtype(series):  # 0..n-1, 1001..1000+n: row numbers
        values = series.dropna()
        return int(values.max()) - int(values.min()) + 1 <= len(values) * 1.05
    return False


def _target(y: pd.Series, target: str, where: str) -> list[Finding]:
    numbers = pd.to_numeric(y, errors="coerce")
    if numbers.notna().mean() < 1.0:
        return []
    counts = y.value_counts()
    singles = float((counts == 1).mean())
    integral = bool(np.all(np.mod(numbers.to_numpy(dtype=float), 1) == 0))
    if len(counts) > MAX_CLASSES or (len(counts) > 10 and singles > 0.5) or (not integral and len(counts) > 10):
        return [Finding("error", f"{where}: task is classification but target '{target}' is a number "
                                 f"with {len(counts)} distinct values ({singles:.0%} of them on a single "
                                 f"row): each value would be a class",
                        "set task: regression")]
    return []


def _leak(series: pd.Series, y: pd.Series, col: str, target: str, classification: bool,
          where: str) -> list[Finding]:
    both = pd.DataFrame({"x": series, "y": y}).dropna()
    if len(both) < MIN_ROWS_FOR_SHAPE or both["x"].nunique() < 2:
        return []
    error = Finding("error", f"{where}: column '{col}' is a copy of the target '{target}': a model "
                             f"would learn to read the answer (leakage)", f"add '{col}' to data.drop")
    if (both["x"].astype(str) == both["y"].astype(str)).all():
        return [error]
    if classification:
        k = both["x"].nunique()
        if k == both["y"].nunique() and k <= len(both) // 2 \
                and (both.groupby("x")["y"].nunique() == 1).all() and (both.groupby("y")["x"].nunique() == 1).all():
            return [error]
        return []
    if pd.api.types.is_numeric_dtype(both["x"]):
        x, t = both["x"].to_numpy(dtype=float), both["y"].to_numpy(dtype=float)
        if np.std(x) > 0 and np.std(t) > 0 and abs(np.corrcoef(x, t)[0, 1]) > 0.99999:
            return [error]
    return []


def _small_classes(y: pd.Series, job: Job, where: str) -> list[Finding]:
    counts = y.astype(str).value_counts()
    splits = 1 + (job.split.val_size > 0) + (job.split.test_size > 0 and job.data.test_path is None)
    small = counts[counts < splits]
    if len(small) == 0:
        return []
    names = ", ".join(f"'{c}' ({n} row{'s' if n > 1 else ''})" for c, n in small.head(5).items())
    return [Finding("warning", f"{where}: class(es) {names} have fewer rows than the {splits} splits "
                               "need: they cannot be both learnt and evaluated",
                    "collect more rows, merge or drop those classes")]
