"""The RuntimeClass suite needs a Kubernetes API; on the node backend it is skipped."""

import pytest

from sandcheck.clusters.base import Backend, KubernetesBackend
from sandcheck.fixtures.pods import kubernetes


@pytest.fixture(scope="module")
def kube(backend: Backend) -> KubernetesBackend:
    """The backend as a Kubernetes API; skips the module's checks when it has none."""
    return kubernetes(backend)
