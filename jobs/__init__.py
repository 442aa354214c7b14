"""What to train: the job model shared by the submitter and the runner, the job catalog, and the
results contract (`jobs.results`) that the runner writes and the submitter reads."""

from jobs.errors import DataError, JobError, QtrainError
from jobs.load import CATALOG_DIR, LoadedJob, load_job, load_job_dict, sweep_trials
from jobs.results import dataset_hash, job_hash
from jobs.spec import Job

__version__ = "0.1.0"

__all__ = [
    "CATALOG_DIR", "DataError", "Job", "JobError", "LoadedJob", "QtrainError", "__version__",
    "dataset_hash", "job_hash", "load_job", "load_job_dict", "sweep_trials",
]
