"""The kind backend: a kind cluster on a private dockerd (or one the user names), the
catalog's handlers added to the running nodes, RuntimeClasses scheduled onto the nodes that
carry their handler. ``cli`` runs kind, ``layout`` decides which node gets which handler,
``nodes`` installs them, ``backend`` ties it together, ``leftovers`` is for cleanup."""
