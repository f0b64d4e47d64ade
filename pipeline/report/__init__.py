"""The report stage as a package, one job per module, each importing only the ones listed before it:

    fmt        numbers and labels as the report prints them
    document   blocks, and their markdown and HTML rendering
    figures    figure specs and the plot functions that draw them
    tables     the tables that are not a question's (header, cells, fitted laws, appendix)
    verdicts   sentences generated from the numbers
    questions  the three question sections, each returning its blocks, summary sentences and figures
    headline   the report's first paragraph: what the study shows, in three sentences with their tests
    build      `build` (blocks + figure specs) and `run`, the stage
"""

from pipeline.report.build import build, run
from pipeline.results import ReadSpec  # the spec of this stage (pipeline.stages looks it up here)

__all__ = ["ReadSpec", "build", "run"]
