"""Stage 5: certify that cutting changes nothing (DESIGN.md §5)."""
from .certify import (TOLERANCE, Certificate, argument_floors, certify, certify_file, io_feeds, kept_outputs,
                      outputs_and_arguments, relative_difference, scale_floors)
from .inputs import random_inputs
from .probe import accepted_inputs, certified_inputs, check_finite, probe

__all__ = ["accepted_inputs", "argument_floors", "certified_inputs", "certify", "certify_file", "Certificate",
           "check_finite", "io_feeds", "kept_outputs", "outputs_and_arguments", "probe", "TOLERANCE", "random_inputs",
           "relative_difference", "scale_floors"]
