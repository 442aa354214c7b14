"""The SDK/HTTP/S3 error table (`submit/backends/errors.py`): every exception the `qarnot` SDK
defines, and botocore's ClientError, becomes a one-line qtrain error with its own row."""

from __future__ import annotations

import inspect

import botocore.exceptions
import pytest
import qarnot.exceptions as qx
import requests

from submit.backends.base import BackendError, BackendUnreachable, TaskNotFound
from submit.backends.errors import RULES, translate
from submit.backends.local import LocalBackend

SDK_EXCEPTIONS = [c for _, c in inspect.getmembers(qx, inspect.isclass)
                  if issubclass(c, Exception) and c.__module__ == qx.__name__]


def test_every_rule_names_a_class_that_exists():
    missing = [r.exception for r in RULES if r.cls() is None]
    assert not missing


def test_no_rule_is_hidden_behind_an_earlier_one():
    for i, later in enumerate(RULES):
        for earlier in RULES[:i]:  # a row for one S3 error code is narrower than its class's
            hidden = issubclass(later.cls(), earlier.cls()) and (earlier.code is None or earlier.code == later.code)
            assert not hidden, f"{later.exception} {later.code or ''} is caught by {earlier.exception} first"


def test_a_full_account_is_one_line_naming_what_frees_it():
    """Issue 42: S3's TooManyBuckets never reaches the user raw."""
    exc = botocore.exceptions.ClientError({"Error": {"Code": "TooManyBuckets", "Message": "You have attempted to "
                                                      "create more buckets than allowed"}}, "CreateBucket")
    line = translate(exc, LocalBackend()).one_line()
    assert "TooManyBuckets" not in line and "maxBucket" in line and "qtrain results gc --remote" in line


@pytest.mark.parametrize("cls", SDK_EXCEPTIONS + [botocore.exceptions.ClientError], ids=lambda c: c.__name__)
def test_each_sdk_exception_has_its_own_row_and_reads_as_one_line(cls):
    assert any(r.cls() is cls for r in RULES), f"no row for {cls.__name__}"
    if cls is botocore.exceptions.ClientError:
        exc = cls({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "PutObject")
    else:
        exc = cls("something\nwent wrong")
    error = translate(exc, LocalBackend())
    assert isinstance(error, BackendError)
    line = error.one_line()
    assert "\n" not in line and "the local Qarnot emulator" in line and line.strip()


def test_kinds_that_callers_act_on():
    backend = LocalBackend()
    assert isinstance(translate(qx.MissingTaskException("x"), backend), TaskNotFound)
    lost = translate(requests.exceptions.ConnectionError("refused"), backend)
    assert isinstance(lost, BackendUnreachable) and "qtrain emulator status" in lost.one_line()
    assert isinstance(translate(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
                                backend), BackendUnreachable)
    assert translate(ValueError("a bug"), backend) is None  # not ours: left as an internal error
