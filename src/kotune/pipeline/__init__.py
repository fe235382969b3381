"""`kotune pipeline`: the stages run in order in one run folder, each feeding the next, with a report."""
