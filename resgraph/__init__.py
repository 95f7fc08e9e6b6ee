"""resgraph: a declarative graph-spec compiler for ResNet-family networks."""

__version__ = "0.1.0"
