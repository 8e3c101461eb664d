"""The featvis analysis's core (feature visualization by optimisation, issue 29): image
parametrisations (pixels, Lucid's decorrelated Fourier basis, colour decorrelation),
transformation robustness, objectives and regularisers, and :func:`optimize`.

Not yet registered: no analysis, command or hook implementation lives here yet, and the package
has no entry point; the analysis (options, result files, figures, report) is wired on top of it.
"""
