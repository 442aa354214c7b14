from __future__ import annotations

import pytest

from tests.submit.conftest import wait_task  # noqa: F401 - the same polling helper


@pytest.fixture
def conn_factory():
    import qarnot

    def make(endpoint):
        return qarnot.connection.Connection(client_token=endpoint.token, cluster_url=endpoint.url,
                                            storage_url=endpoint.s3_url)

    return make
