"""Errors a user can cause. The CLI and the pytest plugin print them as one line."""


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what is wrong and what to do."""


class ComponentError(Exception):
    """A real component (containerd, a runtime, a Kubernetes daemon) failed; carries evidence."""
