"""The live display of a run: a few lines redrawn in place on a terminal, a plain line every
few seconds in a log, or nothing (``--quiet``): the counts as data and the lines made from them
(``frames``, pure), and the timer that draws them (``progress``)."""
