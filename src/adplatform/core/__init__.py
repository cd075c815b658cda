"""The shared platform layer: used by every service, importing none of them."""
