"""The local backend, in its parts: ``cluster`` (bring-up order, teardown, what suites
call), ``pki`` (the run's CA, certificates and kubeconfigs), ``kubelet`` (its config and
the mount namespaces that keep the host untouched), ``components`` (one daemon and its
log), ``binaries`` (the pinned programs and the availability check) and ``leftovers``
(what a run leaves outside its work dir, for stop() and ``sandcheck cleanup``)."""
