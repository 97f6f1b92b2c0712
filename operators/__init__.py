"""The FiftyOne side of PreFIQs: Python API (scoring, detection, visualization, tagging, runs)
and the operators that expose it in the App. ``prefiqs_core`` stays free of FiftyOne."""

__version__ = "0.1.0"
