"""The docker backend: pods are containers of a Docker engine, made through
testcontainers-python, with the catalog's runtimes as the engine's ``--runtime`` names.

``engine`` says which engine (a private dockerd for the run, or the user's, never
reconfigured), ``pods`` turns a PodSpec into a container and times its start, ``backend``
is the contract, ``leftovers`` what ``sandcheck cleanup`` removes after a dead run.
"""
