"""Stage 5: certify that cutting changes nothing (DESIGN.md §5)."""
from .certify import TOLERANCE, Certificate, certify, relative_difference, scale_floors
from .inputs import random_inputs

__all__ = ["certify", "Certificate", "TOLERANCE", "random_inputs", "relative_difference", "scale_floors"]
