"""dotrec: a recommendation microservice for explicit ratings."""

__version__ = "0.1.0"
