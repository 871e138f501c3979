"""Parameters trained under another name and layout than the exported model keeps."""
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ConvTransposeLayout:
    """A ConvTranspose weight W (Cin, Cout/g, k...) trained as the equivalent Conv weight
    W' (Cout, Cin/g, k...): per group the two channel axes swap, and the kernel is flipped."""

    original: str
    training: str
    group: int

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Conv layout -> ConvTranspose layout (works on any array of that shape: weights, masks)."""
        cout, cin_g, *kernel = array.shape
        spatial = tuple(range(2, array.ndim))
        per_group = np.flip(array, spatial).reshape(self.group, cout // self.group, cin_g, *kernel)
        return np.ascontiguousarray(per_group.swapaxes(1, 2).reshape(cin_g * self.group, cout // self.group, *kernel))

    def from_original(self, array: np.ndarray) -> np.ndarray:
        """ConvTranspose layout -> Conv layout."""
        cin, cout_g, *kernel = array.shape
        spatial = tuple(range(2, array.ndim))
        per_group = array.reshape(self.group, cin // self.group, cout_g, *kernel).swapaxes(1, 2)
        return np.ascontiguousarray(np.flip(per_group.reshape(cout_g * self.group, cin // self.group, *kernel), spatial))

    def index_to_training(self, axis: int, channels: np.ndarray) -> tuple[int, np.ndarray]:
        """Channel indices on an axis of W -> (axis of W', channel indices).

        Axis 0 of W (input channel i) is the Conv's input channel i: axis 1 of W' in the
        Conv convention (index i % (Cin/g) within group i // (Cin/g)). Axis 1 of W is the
        output channel: for group 1 index o is W' axis 0 index o; for group g > 1 pass the
        output channel numbers c in [0, Cout) and they stay c on W' axis 0.
        """
        return {0: 1, 1: 0}[axis], np.asarray(channels)

    def index_to_original(self, axis: int, channels: np.ndarray) -> tuple[int, np.ndarray]:
        return {0: 1, 1: 0}[axis], np.asarray(channels)


@dataclass
class ParamMap:
    """Training-graph parameter names and layouts -> the exported model's. Names not listed
    are the same in both graphs, with the same layout."""

    layouts: dict = field(default_factory=dict)  # training name -> ConvTransposeLayout
    kept: list = field(default_factory=list)  # (node name, op type, why it was not rewritten)
    rewritten: dict = field(default_factory=dict)  # op type -> how many nodes were rewritten

    def add(self, layout: ConvTransposeLayout) -> None:
        self.layouts[layout.training] = layout

    def original_name(self, training_name: str) -> str:
        layout = self.layouts.get(training_name)
        return layout.original if layout else training_name

    def training_name(self, original_name: str) -> str:
        return next((t for t, layout in self.layouts.items() if layout.original == original_name), original_name)

    def to_original(self, name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
        """A trained parameter (training name, training layout) -> (exported name, exported layout)."""
        layout = self.layouts.get(name)
        return (name, array) if layout is None else (layout.original, layout.to_original(array))

    def from_original(self, name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
        """An exported parameter -> (training name, training layout), to initialize training."""
        training = self.training_name(name)
        layout = self.layouts.get(training)
        return (name, array) if layout is None else (training, layout.from_original(array))

    def index_to_training(self, name: str, axis: int, channels) -> tuple[str, int, np.ndarray]:
        """(exported name, axis, channel indices) -> the same channels in the training layout."""
        training = self.training_name(name)
        layout = self.layouts.get(training)
        if layout is None:
            return name, axis, np.asarray(channels)
        return (training, *layout.index_to_training(axis, channels))

    def index_to_original(self, name: str, axis: int, channels) -> tuple[str, int, np.ndarray]:
        layout = self.layouts.get(name)
        if layout is None:
            return name, axis, np.asarray(channels)
        return (layout.original, *layout.index_to_original(axis, channels))

    def training_params(self, original_params: list[str]) -> list[str]:
        """The training graph's names for `original_params` (e.g. trainable_params of the export)."""
        return [self.training_name(name) for name in original_params]
