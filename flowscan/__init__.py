"""flowscan: verify call flows across guest Linux, host KVM and QEMU from source."""

__version__ = "0.1.0"
