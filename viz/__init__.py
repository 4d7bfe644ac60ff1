"""viz/: the static report site that visualize.py writes — pictures (draw), numbers (stats), HTML (site), and the
sections that tie them to data, runs, submissions and pseudo-labels (report). Imports data/, models/, csrc/; nothing
there imports viz/.
"""


class ReportError(Exception):
    """A missing or unreadable input; the message names the file. visualize.py prints it and exits with code 2."""
