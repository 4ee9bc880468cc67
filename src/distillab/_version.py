"""The package version, importable by every module without importing the package (and its API) first."""

__version__ = "0.1.0"
