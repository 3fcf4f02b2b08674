"""The kwok backend: the local backend's real cluster plus a fleet of simulated nodes.

``cluster`` (bring-up, teardown, what suites call) extends the local cluster with kwok's
controller (``binary``: where it is) and its configuration (``config``: the nodes it
manages, the stages that make nodes Ready and pods Running, its server); ``nodes`` makes
the simulated nodes through the API and waits for them; ``logs`` serves recorded logs for
the simulated pods (kwok's ``Logs`` objects, one per pod, made as each pod appears).
"""
