"""workloadgen."""
