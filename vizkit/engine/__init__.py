"""The engine: recording forwards (recorder, op tape), projection rules, the deconvnet, window
geometry and receptive fields, incremental inference. Imports nothing else of vizkit but
``vizkit.errors``."""
