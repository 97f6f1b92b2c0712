"""Calibration tables shipped for the default settings (JSON, package data): one per backbone,
made by ``make calibration`` (``python -m prefiqs_core calibrate ... --half A``)."""
