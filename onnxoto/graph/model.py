"""The normalized model every later stage receives."""
from dataclasses import dataclass, field

import onnx

from ..ops import FLOAT_TYPES
from .view import dims


@dataclass
class Model:
    """A normalized ONNX model plus what later stages ask of it: shapes, dtypes, parameters."""

    proto: onnx.ModelProto
    name: str = "model"
    shapes: dict = field(default_factory=dict)  # value name -> tuple of int (static) or str (symbolic) or None
    dtypes: dict = field(default_factory=dict)  # value name -> onnx TensorProto data type
    initializers: dict = field(default_factory=dict)  # name -> TensorProto

    @classmethod
    def from_proto(cls, proto, name="model"):
        model = cls(proto=proto, name=name)
        model.refresh()
        return model

    def refresh(self):
        """Re-read shapes, dtypes and initializers from the proto (after shape inference)."""
        graph = self.proto.graph
        self.shapes, self.dtypes = {}, {}
        for info in list(graph.input) + list(graph.value_info) + list(graph.output):
            self.dtypes[info.name] = info.type.tensor_type.elem_type
            shape = dims(info)
            if shape is not None:
                self.shapes[info.name] = shape
            else:
                self.shapes.setdefault(info.name, None)
        self.initializers = {t.name: t for t in graph.initializer}
        for t in graph.initializer:
            self.shapes[t.name] = tuple(t.dims)
            self.dtypes[t.name] = t.data_type

    @property
    def graph(self):
        return self.proto.graph

    def is_float(self, name):
        return self.dtypes.get(name) in FLOAT_TYPES

    def is_param(self, name):
        """A float initializer: what pruning slices and training may update."""
        return name in self.initializers and self.initializers[name].data_type in FLOAT_TYPES

    @property
    def input_names(self):
        return [i.name for i in self.graph.input if i.name not in self.initializers]

    @property
    def output_names(self):
        return [o.name for o in self.graph.output]

