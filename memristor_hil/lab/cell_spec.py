"""The ``--cells`` syntax's help text, in a module that imports nothing, so the command line's
``--help`` starts without numpy. The parser is :func:`memristor_hil.lab.characterize.parse_cells`.
"""

CELLS_HELP = (
    "'all'; or blocks ROWS,COLS separated by ';', where ROWS and COLS are a number or a "
    "half-open range START:STOP (e.g. '0:4,0:8' is rows 0-3 x cols 0-7, '2,5' one cell, "
    "'0,0;3,1:3' three cells, ':,0' all of column 0)"
)
