"""``symphony simulate``: the shipped components on a virtual clock (no sockets, no sleeping)."""
