from __future__ import annotations

import pytest


@pytest.fixture
def conn_factory():
    import qarnot

    def make(endpoint):
        return qarnot.connection.Connection(client_token=endpoint.token, cluster_url=endpoint.url,
                                            storage_url=endpoint.s3_url)

    return make


@pytest.fixture(scope="module")
def docker_home(tmp_path_factory):
    """A home for a test module's own emulators; the module skips, saying why, without Docker."""
    from tests.helpers import docker_skip_reason

    reason = docker_skip_reason()
    if reason:
        pytest.skip(reason)
    return tmp_path_factory.mktemp("docker-emulator")
