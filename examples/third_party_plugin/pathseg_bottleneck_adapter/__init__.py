"""Example third-party pathseg plugin: SAM + bottleneck adapters."""
