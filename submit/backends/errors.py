"""SDK, HTTP and S3 errors -> qtrain's one-line errors, as one table.

Each row names an exception class (imported only when an error is translated), the qtrain error
it becomes, and the message and next step shown to the user.  The first row whose class the
exception is an instance of wins, so a subclass comes before its base.  `tests/submit/
backends/test_errors.py` checks that every class of `qarnot.exceptions`, and botocore's
`ClientError`, has a row of its own.

Placeholders: {where} (e.g. "Qarnot", "the local Qarnot emulator"), {msg} (the exception's text),
{url} (the API's address), {token_hint}, {unreachable_hint} (the backend's next steps).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

from submit.backends.base import BackendError, BackendUnreachable, TaskNotFound


@dataclass(frozen=True)
class Rule:
    exception: str  # "module:ClassName"
    error: type[BackendError]
    message: str
    hint: str | None = None
    code: str | None = None  # an S3 ClientError's error code this row is for (None: any)

    def matches(self, exc: BaseException) -> bool:
        cls = self.cls()
        if cls is None or not isinstance(exc, cls):
            return False
        return self.code is None or (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") == self.code

    def cls(self) -> type[BaseException] | None:
        module, _, name = self.exception.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return None


QX = "qarnot.exceptions"
QUOTA = "wait for running tasks to end, or cancel some (qtrain results list)"
RULES: tuple[Rule, ...] = (
    # --- the Qarnot API, through the SDK
    Rule(f"{QX}:UnauthorizedException", BackendError, "{where} refused the token: {msg}",
         "{token_hint}"),
    Rule(f"{QX}:MissingTaskException", TaskNotFound, "{where}: task not found ({msg})",
         "it was deleted, or the emulator was restarted since"),
    Rule(f"{QX}:MissingTaskInstanceException", TaskNotFound, "{where}: task instance not found ({msg})",
         "qtrain logs RUN without --instance shows the whole task"),
    Rule(f"{QX}:MissingBucketException", BackendError, "{where}: bucket missing ({msg})",
         "it was deleted; run the job again to upload its data"),
    Rule(f"{QX}:BucketStorageUnavailableException", BackendUnreachable,
         "the storage of {where} is unavailable ({msg})", "{unreachable_hint}"),
    Rule(f"{QX}:MaxTaskException", BackendError, "{where}: task quota reached ({msg})", QUOTA),
    Rule(f"{QX}:MaxJobException", BackendError, "{where}: job quota reached ({msg})", QUOTA),
    Rule(f"{QX}:MaxPoolException", BackendError, "{where}: pool quota reached ({msg})", QUOTA),
    Rule(f"{QX}:NotEnoughCreditsException", BackendError, "{where}: not enough credits ({msg})",
         "add credits to the account, or run on the local emulator (--backend local)"),
    Rule(f"{QX}:MissingProfileException", BackendError, "{where}: unknown profile ({msg})",
         "qtrain profiles lists what the account offers"),
    Rule(f"{QX}:MissingProjectException", BackendError, "{where}: project not found ({msg})",
         "check the project the account uses"),
    Rule(f"{QX}:MissingJobException", BackendError, "{where}: job not found ({msg})"),
    Rule(f"{QX}:MissingPoolException", BackendError, "{where}: pool not found ({msg})"),
    Rule(f"{QX}:MissingPoolInstanceException", BackendError, "{where}: pool instance not found ({msg})"),
    Rule(f"{QX}:SecretNotFoundException", BackendError, "{where}: secret not found ({msg})"),
    Rule(f"{QX}:SecretConflictException", BackendError, "{where}: secret already exists ({msg})"),
    Rule(f"{QX}:QarnotGenericException", BackendError, "{where}: {msg}"),
    Rule(f"{QX}:QarnotException", BackendError, "{where}: {msg}"),
    # --- HTTP (the SDK uses requests): the connection itself
    Rule("requests.exceptions:ConnectionError", BackendUnreachable, "cannot reach {where} at {url}",
         "{unreachable_hint}"),
    Rule("requests.exceptions:Timeout", BackendUnreachable, "{where} at {url} did not answer in time",
         "{unreachable_hint}"),
    # --- S3 (the SDK uses boto3)
    Rule("botocore.exceptions:EndpointConnectionError", BackendUnreachable,
         "cannot reach the storage of {where}: {msg}", "{unreachable_hint}"),
    Rule("botocore.exceptions:ConnectionClosedError", BackendUnreachable,
         "the storage of {where} closed the connection: {msg}", "{unreachable_hint}"),
    Rule("botocore.exceptions:ConnectTimeoutError", BackendUnreachable,
         "the storage of {where} did not answer in time: {msg}", "{unreachable_hint}"),
    Rule("botocore.exceptions:ReadTimeoutError", BackendUnreachable,
         "the storage of {where} did not answer in time: {msg}", "{unreachable_hint}"),
    Rule("botocore.exceptions:NoCredentialsError", BackendError,
         "the storage of {where} got no credentials: {msg}", "{token_hint}"),
    Rule("botocore.exceptions:ClientError", BackendError, "the storage of {where} holds as many buckets as the "
         "account may have (maxBucket): no bucket for this run's results", "qtrain results gc --remote lists what "
         "no run in the store needs; --yes deletes it", code="TooManyBuckets"),
    Rule("botocore.exceptions:ClientError", BackendError, "storage of {where}: {msg}"),
)


def message(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def translate(exc: BaseException, backend: Any) -> BackendError | None:
    """The qtrain error for `exc` raised while `backend` worked, or None (not an error we know:
    the caller lets it through as an internal error)."""
    if isinstance(exc, BackendError):
        return exc
    for rule in RULES:
        if rule.matches(exc):
            return rule_error(rule, exc, backend)
    return None


def rule_error(rule: Rule, exc: BaseException, backend: Any) -> BackendError:
    fields = {"where": backend.describe(), "msg": message(exc),
              "url": getattr(backend, "cluster_url", "?"),
              "token_hint": getattr(backend, "token_hint", ""),
              "unreachable_hint": getattr(backend, "unreachable_hint", "")}
    hint = rule.hint.format(**fields) if rule.hint else None
    return rule.error(rule.message.format(**fields), hint=hint or None)


def translated(fn: Callable) -> Callable:
    """A backend method whose SDK, HTTP and S3 errors become BackendErrors with a next step (the
    table above): no SDK type leaves a backend.  A lost connection is what the backend's
    `unreachable` says it means there."""

    @functools.wraps(fn)
    def wrapper(self, *args: Any, **kwargs: Any):
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - translated when known, else re-raised as is
            error = translate(exc, self)
            if error is None or error is exc:
                raise
            if isinstance(error, BackendUnreachable):
                error = self.unreachable(error)
            raise error from exc

    return wrapper
