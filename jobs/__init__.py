"""What to train: the job model shared by the submitter and the runner, and the job catalog."""

from jobs.errors import DataError, JobError, QtrainError
from jobs.load import CATALOG_DIR, LoadedJob, job_hash, load_job, load_job_dict, sweep_trials
from jobs.spec import Job

__all__ = [
    "CATALOG_DIR", "DataError", "Job", "JobError", "LoadedJob", "QtrainError", "job_hash",
    "load_job", "load_job_dict", "sweep_trials",
]
