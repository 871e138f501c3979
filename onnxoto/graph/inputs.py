"""Input sizes a user binds (`--input-shape NAME:DIMS`) and what the model declares."""
from ..errors import OptionError


def parse_input_shapes(specs):
    """["images:1x3x640x640", "mask:-1x128"] -> {"images": (1, 3, 640, 640), "mask": (-1, 128)}.

    The name is everything before the last colon (ONNX names may hold colons); -1 keeps a dim symbolic."""
    shapes = {}
    for spec in specs or ():
        name, sep, dims = spec.rpartition(":")
        try:
            sizes = tuple(int(d) for d in dims.replace(",", "x").split("x")) if dims else ()
        except ValueError:
            sizes = None
        if not sep or not name or sizes is None or any(d == 0 or d < -1 for d in sizes):
            raise OptionError(f"--input-shape {spec!r}: expected NAME:DIMS such as images:1x3x640x640 "
                              "(-1 keeps a dim symbolic)")
        shapes[name] = sizes
    return shapes


def bind_input_shapes(proto, shapes, model_name="model"):
    """Fix the symbolic input dims of `proto` (in place) to `shapes` (name -> sizes, -1 leaves a dim as it is).

    A name the model has no input for, a wrong rank or a size that contradicts a static one is an OptionError."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = {i.name: i for i in proto.graph.input if i.name not in inits}
    for name, sizes in shapes.items():
        if name not in inputs:
            raise OptionError(f"--input-shape {name}: {model_name} has no input {name!r} "
                              f"(inputs: {', '.join(inputs)})")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(sizes):
            raise OptionError(f"--input-shape {name}: {len(sizes)} dims given, the input has rank {len(dims)} "
                              f"({declared(inputs[name])})")
        for axis, (dim, size) in enumerate(zip(dims, sizes)):
            if size == -1:
                continue
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
                raise OptionError(f"--input-shape {name}: axis {axis} has the static size {dim.dim_value} in "
                                  f"{model_name}, not {size}")
            dim.Clear()
            dim.dim_value = size
    return proto


def declared(value):
    """A value's declared shape as text: 1x3xHxW ('?' for an unnamed unknown dim)."""
    dims = value.type.tensor_type.shape.dim
    return "x".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in dims) or "scalar"


def describe_sizes(model):
    """One line naming the sizes of a normalized Model's inputs, and the symbolic dims left."""
    parts, symbols = [], []
    for name in model.input_names:
        dims = model.shapes.get(name) or ()
        parts.append(f"{name} " + ("x".join(str(d) if isinstance(d, int) else str(d or "?") for d in dims) or "scalar"))
        symbols += [str(d or "?") for d in dims if not isinstance(d, int)]
    line = "input sizes: " + ", ".join(parts)
    if symbols:
        line += (f" (symbolic dims {', '.join(dict.fromkeys(symbols))} counted as 1 in FLOPs; "
                 "--input-shape NAME:DIMS binds them)")
    return line


def misdeclared_outputs(proto, shapes):
    """{output: (declared, ran)} for the graph outputs whose declared shape `shapes` (name -> the shape a run
    gave) contradicts: another rank, or a static dim of another size."""
    wrong = {}
    for value in proto.graph.output:
        tensor, ran = value.type.tensor_type, shapes.get(value.name)
        if ran is None or not tensor.HasField("shape"):
            continue
        dims = tensor.shape.dim
        if len(dims) != len(ran) or any(d.HasField("dim_value") and d.dim_value != n for d, n in zip(dims, ran)):
            wrong[value.name] = (declared(value), "x".join(map(str, ran)) or "scalar")
    return wrong


def redeclare_outputs(proto, ranks):
    """Declare the outputs named in `ranks` (name -> rank) with that many symbolic dims, in place."""
    for value in proto.graph.output:
        if value.name in ranks:
            shape = value.type.tensor_type.shape
            del shape.dim[:]
            for axis in range(ranks[value.name]):
                shape.dim.add().dim_param = f"{value.name}_dim{axis}"
