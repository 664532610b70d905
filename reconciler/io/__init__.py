"""Adapters for the instrument's file formats and the CASA tools.

These are the only modules that import pyuvdata, python-casacore or casatasks.
"""
