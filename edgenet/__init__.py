"""edgenet: an edge-device network (central server, edge-device clients, peer-to-peer UVF)."""

__version__ = "0.1.0"
