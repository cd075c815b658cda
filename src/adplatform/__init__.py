"""adplatform: campaign management, OpenRTB bidding and analytics, on Kubernetes."""

__version__ = "0.1.0"
