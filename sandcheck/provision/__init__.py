"""Provisioning: the runtimes and tools a run needs, installed or built once.

  paths      where provisioned tools live (cheap to import: runtime code needs only this)
  pins       every pinned version
  tools      what a pinned Go or crates.io build is, and the tools built
  gobuild    the one Go build engine, its cache stamp and lock (shared by cargobuild)
  cargobuild crates.io builds with cargo (youki)
  kubernetes what is particular to building Kubernetes and etcd
  apt        Debian packages, installed when missing
  hostprep   the explicit host changes a run may need (cgroups for crun)
  preconditions  a runtime's host precondition tried for real (gVisor on KVM, Kata)
  links      links to the built binaries in the directories put on PATH
  versions   versions of what a run used, for the report
  install    ``provision()``, which composes the steps (``sandcheck provision``)
"""
