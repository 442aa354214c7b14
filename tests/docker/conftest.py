from __future__ import annotations

import pytest


@pytest.fixture
def conn_factory():
    import qarnot

    def make(endpoint):
        return qarnot.connection.Connection(client_token=endpoint.token, cluster_url=endpoint.url,
                                            storage_url=endpoint.s3_url)

    return make
