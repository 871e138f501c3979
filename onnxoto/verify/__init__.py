"""Stage 5: certify that cutting changes nothing (DESIGN.md §5)."""
from .certify import TOLERANCE, Certificate, certify, certify_file, relative_difference, run
from .inputs import random_inputs

__all__ = ["certify", "certify_file", "Certificate", "TOLERANCE", "random_inputs", "relative_difference", "run"]
