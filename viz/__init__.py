"""viz/: the static report site that visualize.py writes — pictures (draw), HTML (site), what the sections share
(report) and one module per section: data_section, run_section, submission_section, pseudo_section, and the
augmentation section beside the augmentation preview tool (preview). Its numbers are the toolkit's own: data.stats
for the data, engine.predict and csrc.ops for a run's predictions and scores. Imports data/, models/, csrc/,
engine/; nothing there imports viz/.
"""


class ReportError(Exception):
    """A missing or unreadable input; the message names the file. visualize.py prints it and exits with code 2."""
