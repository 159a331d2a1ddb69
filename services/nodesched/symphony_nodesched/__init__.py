"""nodesched."""
