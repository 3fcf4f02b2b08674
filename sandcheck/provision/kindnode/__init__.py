"""The kind node image, built offline from local parts: ``build`` (the cached image and
loading it into a docker engine), ``rootfs`` (debootstrap plus kind's base image steps),
``nodefiles`` (what sandcheck adds to a node, and why), ``preload`` (the control plane's
images in the node's containerd), ``ociarchive`` (single-layer image archives) and
``clusterconfig`` (the kind cluster config this image needs)."""

from sandcheck.provision.kindnode.build import (
    build_node_image,
    load_node_image,
    node_image_ref,
)

__all__ = ["build_node_image", "load_node_image", "node_image_ref"]
