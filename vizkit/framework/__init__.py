"""The plugin framework: hook specs, the plugin manager and registry, analyses and how they run,
results and atomic saving, model loading by spec."""
