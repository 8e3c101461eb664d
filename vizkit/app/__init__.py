"""The application: the ``vizkit`` command line, the demo and the HTML report."""
