"""PreFIQs for FiftyOne: registers the operators (the work lives in ``operators/``)."""
from .operators.plugin_ops import OPERATORS
from .operators.evaluation import EvaluateFaceQuality
from .operators.ijb_dataset import LoadIJB
from .operators.panel import PrefiqsPanel


def register(p):
    for op in OPERATORS:
        p.register(op)
    p.register(EvaluateFaceQuality)
    p.register(LoadIJB)
    p.register(PrefiqsPanel)
