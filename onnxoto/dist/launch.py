"""Which communicator this process gets: MPI when launched by mpirun/mpiexec/srun with more than one rank,
NCCL for CUDA buffers, otherwise the single-process no-op. mpi4py is imported only when launched."""
import os

from ..errors import OptionError
from .comm import Communicator
from .mpi import DEFAULT_TIMEOUT_S

# world-size variables set by the launchers: Open MPI's mpirun, MPICH/Intel MPI's Hydra and srun (PMI)
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def launched_size():
    """The world size a launcher announced in the environment (1 when started plainly)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def timeout_seconds():
    value = os.environ.get("ONNXOTO_DIST_TIMEOUT")
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise OptionError(f"ONNXOTO_DIST_TIMEOUT={value!r}: expected seconds") from None


def communicator(device="cpu"):
    """The communicator for this process; a plain start (or a world of one) gets the no-op one."""
    size = launched_size()
    if size <= 1:
        return Communicator()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise OptionError(f"launched as one of {size} ranks but mpi4py is not installed: "
                          "pip install 'onnxoto[dist]' (or start without mpirun)") from None
    if device == "cuda":
        from .nccl import NcclCommunicator

        return NcclCommunicator(timeout=timeout_seconds())
    from .mpi import MpiCommunicator

    comm = MpiCommunicator(timeout=timeout_seconds())
    return comm if comm.size > 1 else Communicator()
