"""benchsuite: score compressed transformer encoders on GLUE, SQuAD v1.1 and CoNLL-2003.

Data flows one way: task spec + model + compressor config -> compressed model ->
predictions -> scores + measurements -> record (``results/``) -> report (``reports/``).
"""

__version__ = "0.1.0"
