"""The RuntimeClass suite needs a Kubernetes API; on the node backend it is skipped."""

import pytest


@pytest.fixture(scope="module")
def kube(backend):
    if not getattr(backend, "kubernetes", False):
        pytest.skip(f"needs a Kubernetes API; the {backend.name} backend has none: "
                    "run with --backend local (or --backend kubeconfig --kubeconfig PATH)")
    return backend
