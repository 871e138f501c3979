"""Tiny ONNX graphs built by hand, and the zero-invariance check the rules tests share.

`Net` keeps edge-case tests short: declare inputs, weights and nodes, then `net.model(...)`.
`check_zero_invariance(analysis)` zeroes the producer slices of random ZIGs of every prunable
group, runs onnxruntime with every intermediate tensor exposed, and asserts that each place the
analysis says a channel is consumed (summed over) sees an exact zero there, and that zeroing the
consumer slices as well changes nothing.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class Net:
    """A graph under construction: `op` appends a node and returns its output name(s)."""

    def __init__(self, opset=17, seed=0):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.inputs = [], [], []
        self.extra_opsets = {}
        self._count = {}

    def _name(self, stem):
        taken = {node.name for node in self.nodes}
        while True:
            self._count[stem] = self._count.get(stem, 0) + 1
            if f"{stem}_{self._count[stem]}" not in taken:
                return f"{stem}_{self._count[stem]}"

    def input(self, name="x", shape=("N", 3, 16, 16), dtype=FLOAT):
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def weight(self, name, shape, scale=None, offset=0.1):
        """A float initializer with non-trivial, deterministic values (no zero, no uniform tensor)."""
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        value = self.rng.normal(0.0, scale, size=shape) + offset * np.sign(self.rng.normal(size=shape))
        return self.const(name, value.astype(np.float32))

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, name, values):
        return self.const(name, np.asarray(values, dtype=np.int64))

    def op(self, op_type, inputs, outputs=1, name=None, domain="", **attrs):
        name = name or self._name(op_type.lower())
        if isinstance(outputs, int):
            outputs = [name if outputs == 1 else f"{name}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name, domain=domain, **attrs))
        if domain and domain not in ("", "ai.onnx"):
            self.extra_opsets.setdefault(domain, 1)
        return outputs[0] if len(outputs) == 1 else outputs

    # --- common layers ---
    def conv(self, x, cin, cout, k=3, group=1, bias=True, name=None, pads=None):
        name = name or self._name("conv")
        w = self.weight(f"{name}.weight", (cout, cin // group, k, k))
        inputs = [x, w] + ([self.weight(f"{name}.bias", (cout,), scale=0.1)] if bias else [])
        pads = [k // 2] * 4 if pads is None else pads
        return self.op("Conv", inputs, name=name, kernel_shape=[k, k], pads=pads, group=group)

    def linear(self, x, fin, fout, name=None, trans_b=1):
        """Gemm with transB=1 (PyTorch's layout, weight (out, in)) or transB=0 (weight (in, out))."""
        name = name or self._name("fc")
        shape = (fout, fin) if trans_b else (fin, fout)
        w = self.weight(f"{name}.weight", shape, scale=1.0 / np.sqrt(fin))
        b = self.weight(f"{name}.bias", (fout,), scale=0.1)
        return self.op("Gemm", [x, w, b], name=name, transB=trans_b)

    def model(self, outputs, ir_version=8, opset=None):
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        graph = helper.make_graph(self.nodes, "net", self.inputs,
                                  [helper.make_tensor_value_info(o, FLOAT, None) for o in outputs],
                                  initializer=self.inits)
        imports = [helper.make_opsetid("", opset or self.opset)]
        imports += [helper.make_opsetid(d, v) for d, v in self.extra_opsets.items()]
        model = helper.make_model(graph, opset_imports=imports, producer_name="onnxoto-tests")
        model.ir_version = ir_version
        _fill_output_shapes(model)
        return model


def _fill_output_shapes(model):
    """Give graph outputs the types and shapes ONNX infers (the checker wants a shape on every output)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an op of an unknown domain: leave the outputs as declared
        return
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
            out.CopyFrom(known[out.name])


# --- running ---------------------------------------------------------------------------------

def random_feed(proto, batch=2, seed=0):
    """Random inputs for every graph input that is not an initializer; symbolic dims become `batch`."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in proto.graph.initializer}
    feed = {}
    for info in proto.graph.input:
        if info.name in inits:
            continue
        tensor = info.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor.shape.dim]
        if tensor.elem_type == INT64:
            feed[info.name] = rng.integers(0, 4, size=shape).astype(np.int64)
        else:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
            feed[info.name] = rng.normal(size=shape).astype(dtype)
    return feed


def run(proto, feed=None, expose=False):
    """Run `proto` in onnxruntime (no graph optimizations); with expose, every float intermediate too.

    Returns name -> array.
    """
    import onnxruntime as ort

    proto = _copy(proto)
    if expose:
        _expose_intermediates(proto)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = random_feed(proto) if feed is None else feed
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def _copy(proto):
    return onnx.ModelProto.FromString(proto.SerializeToString())


def _expose_intermediates(proto):
    """Add every typed intermediate tensor (value_info, as shape inference leaves it) to the graph outputs."""
    graph = proto.graph
    have = {o.name for o in graph.output} | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    produced = {name for node in graph.node for name in node.output}
    for info in graph.value_info:
        if info.name in produced and info.name not in have and info.type.tensor_type.elem_type:
            graph.output.append(info)
            have.add(info.name)


# --- zero invariance ----------------------------------------------------------------------------

def zero_slices(proto, slices, subset):
    """A copy of `proto` with slices[*].index[subset] set to zero along each slice's axis."""
    proto = _copy(proto)
    inits = {t.name: t for t in proto.graph.initializer}
    for s in slices:
        array = numpy_helper.to_array(inits[s.name]).copy()
        positions = s.index[subset].ravel()
        index = [slice(None)] * array.ndim
        index[s.axis] = positions
        array[tuple(index)] = 0
        inits[s.name].CopyFrom(numpy_helper.from_array(array, s.name))
    return proto


def consumed_places(model):
    """(label, [(tensor, axis)]) for every contraction the rules state: where channel indices are summed away."""
    from onnxoto.groups.build import couple

    space, record = couple(model)
    return [(label, [space.keys[d] for d in dims]) for label, dims, _ in record.contracts]


def check_group(analysis, group, subset, feed=None, places=None):
    """Assert the zero-invariance properties for ZIGs `subset` of `group` (see module docstring)."""
    model = analysis.model
    places = consumed_places(model) if places is None else places
    feed = random_feed(model.proto) if feed is None else feed
    zeroed = zero_slices(model.proto, group.producers, subset)
    values = run(zeroed, feed, expose=True)
    values.update({t.name: numpy_helper.to_array(t) for t in zeroed.graph.initializer})
    where = {(d.tensor, d.axis): d.index[subset].ravel() for d in group.dims}
    folded = {(f.tensor, f.axis) for f in group.folds}
    for label, tensors in places:
        inside = [(t, a) for t, a in tensors if (t, a) in where]
        if not inside:
            continue
        if any(key in folded for key in inside):
            check_constant_channels(analysis, group, subset, values, next(k for k in inside if k in folded))
            continue
        zero_somewhere = any(np.all(np.take(values[t], where[(t, a)], axis=a) == 0) for t, a in inside if t in values)
        assert zero_somewhere, (f"group {group.id} ZIGs {list(subset)}: {label} consumes non-zero channels "
                                f"in {inside}")
    # a consumer that folds the constant into its bias reads it: the certificate checks those (verify)
    folding = {i for f in group.folds for n in model.graph.node if f.consumer in n.output for i in n.input}
    consumers = [s for s in group.slices if s.role == "consumer" and s.name not in folding]
    if consumers:
        both = zero_slices(zeroed, consumers, subset)
        base = run(zeroed, feed)
        after = run(both, feed)
        for name, ref in base.items():
            scale = max(float(np.max(np.abs(ref))), 1e-12) if ref.size else 1.0
            diff = float(np.max(np.abs(ref - after[name]))) if ref.size else 0.0
            assert diff <= 1e-5 * scale, (f"group {group.id} ZIGs {list(subset)}: zeroing its consumer slices "
                                          f"changes output {name} by {diff:g} (scale {scale:g})")


def check_constant_channels(analysis, group, subset, values, key):
    """Where the group's channels are folded into a bias (Group.folds), each zeroed channel is one value at
    every position, the one the analysis computes (groups.channel_constants)."""
    from onnxoto.graph import producers
    from onnxoto.groups import channel_constants, zeroed_values

    tensor, axis = key
    positions = next(d for d in group.dims if (d.tensor, d.axis) == key).index[subset].ravel()
    seen = np.moveaxis(np.take(values[tensor], positions, axis=axis), axis, 0).reshape(len(positions), -1)
    model = analysis.model
    const = zeroed_values(model, [(s.name, s.axis, s.index[subset].ravel()) for s in group.producers])
    producer = {out: (k, node) for k, node in enumerate(model.graph.node) for out in node.output}
    computed = channel_constants(model, producer, group.constants, const)[tensor].ravel()[positions]
    assert producers(model.graph)[tensor] is not None
    np.testing.assert_allclose(seen, np.broadcast_to(computed[:, None], seen.shape), rtol=1e-5, atol=1e-6,
                               err_msg=f"group {group.id}: channels of {tensor} folded at a bias are not the "
                                       "constant the analysis computes")


def check_zero_invariance(analysis, trials=2, seed=0):
    """check_group on random non-empty subsets of the ZIGs of every prunable group; returns how many were checked."""
    rng = np.random.default_rng(seed)
    places = consumed_places(analysis.model)
    feed = random_feed(analysis.model.proto)
    checked = 0
    for group in analysis.prunable:
        for _ in range(trials):
            size = int(rng.integers(1, group.num_zigs + 1))
            subset = np.sort(rng.choice(group.num_zigs, size=size, replace=False))
            check_group(analysis, group, subset, feed, places)
        checked += 1
    return checked


def analyze_proto(proto, name="test"):
    """analyze(from_proto(proto)) in one call."""
    from onnxoto.graph import from_proto
    from onnxoto.groups import analyze

    return analyze(from_proto(proto, name))


def group_of(analysis, param, axis=None):
    """The group owning a slice of initializer `param` (on `axis` when given)."""
    found = [g for g in analysis.groups for s in g.slices if s.name == param and (axis is None or s.axis == axis)]
    assert found, f"no group owns {param}:{axis}; groups: {[g.id for g in analysis.groups]}"
    return found[0]


def slice_of(group, param, axis=None):
    return next(s for s in group.slices if s.name == param and (axis is None or s.axis == axis))


def analyze_checked(proto, name="test", run_check=True):
    """Analyze `proto`; unless told not to, check zero invariance of every prunable group in onnxruntime."""
    analysis = analyze_proto(proto, name)
    if run_check:
        check_zero_invariance(analysis)
    return analysis


def between_convs(make_middle, c=8, c_out=None, opset=17, hw=8, post_k=1):
    """x -> conv 'pre' (3 -> c) -> make_middle(net, h) -> conv 'post' (c_out -> 4) -> y; returns the ModelProto.

    make_middle returns the tensor fed to 'post'; c_out is its channel count (default c). post_k: the
    kernel of 'post' (padded by post_k // 2, so that k > 1 reads padding).
    """
    n = Net(opset=opset)
    h = n.conv(n.input(shape=("N", 3, hw, hw)), 3, c, name="pre")
    h = make_middle(n, h)
    w = n.weight("post.weight", (4, c_out or c, post_k, post_k))
    n.op("Conv", [h, w, n.weight("post.bias", (4,), scale=0.1)], outputs=["y"], name="post",
         kernel_shape=[post_k, post_k], pads=[post_k // 2] * 4)
    return n.model("y")
