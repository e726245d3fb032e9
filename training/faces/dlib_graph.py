"""dlib's face embedding network (`dlib_face_recognition_resnet_model_v1.dat`, from the
face_recognition_models package) as an ONNX graph whose weights stay in dlib's own file.

`python -m training.faces.dlib_graph --out models/face_embed.onnx` writes the graph (~20 KB) and
checks it against dlib on the photos of `--check DIR` (default ../shared/data/faces), printing one
JSON line: the largest difference between the two embeddings of a face, and each one's time.

Why: dlib-bin's wheels are built without BLAS, and its network took ~125 ms a face here, most of
a door's decision time (three agreeing frames). onnxruntime runs the same arithmetic on its own
kernels. Why the weights stay in dlib's file: the graph's initializers are external data that
point into it (offset and length), so the repository holds no copy of the 22 MB of weights, and
the gateway hands the registry package's own file to onnxruntime in memory (`edge.vision.face_embed`).
The graph is only good for the one file it was made from: its sha256 is in the graph's metadata
and in the manifest, and the gateway refuses any other.

The file is dlib's serialisation of its `anet_type` (dlib/examples/dnn_face_recognition_ex.cpp),
read here field by field as dlib's deserialisers read it (dlib/dnn/core.h, layers.h, input.h,
loss.h): integers as a control byte (sign, byte count) and little-endian bytes, strings as a
length and bytes, booleans as '0' / '1', tensors as four dimensions and raw little-endian float32.
The network nests layers from the loss down to the input, and each layer writes its version
before its sub-network and its own fields after, so the fields come in input-to-output order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SOURCE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP = 150


class _Stream:
    """dlib's serialisation primitives over the file's bytes."""

    def __init__(self, data: bytes):
        self.b, self.i = data, 0

    def int(self) -> int:
        if self.i >= len(self.b):
            raise ValueError("the file ends early: not the file this reader knows")
        control = self.b[self.i]
        n = control & 0x0F
        value = int.from_bytes(self.b[self.i + 1: self.i + 1 + n], "little")
        self.i += 1 + n
        return -value if control & 0x80 else value

    def str(self) -> str:
        n = self.int()
        self.i += n
        return self.b[self.i - n: self.i].decode("ascii")

    def bool(self) -> bool:
        c = self.b[self.i: self.i + 1]
        if c not in (b"0", b"1"):
            raise ValueError(f"byte {self.i}: {c!r} is not a serialised bool: not the file this reader knows")
        self.i += 1
        return c == b"1"

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa * 2.0 ** exponent)

    def tensor(self) -> tuple[int, int]:
        """A tensor's (offset of its first float in the file, number of floats); skips its data."""
        if (version := self.int()) != 2:
            raise ValueError(f"byte {self.i}: tensor version {version}, expected 2")
        n = int(np.prod([self.int() for _ in range(4)]))
        if self.i + 4 * n > len(self.b):
            raise ValueError(f"byte {self.i}: the file ends inside a tensor of {n} floats")
        self.i += 4 * n
        return self.i - 4 * n, n

    def alias(self) -> tuple[int, ...]:
        """An alias tensor's dimensions (a view into a layer's parameters)."""
        if (version := self.int()) != 1:
            raise ValueError(f"byte {self.i}: alias tensor version {version}, expected 1")
        return tuple(self.int() for _ in range(4))


@dataclass
class Layer:
    kind: str                       # con, affine, relu, max_pool, avg_pool, add, fc, tag, skip
    tag: int = 0                    # add: the tag it adds; tag / skip: its id
    params: tuple[int, int] = (0, 0)  # (offset of its first float in the file, how many): con, affine, fc
    dims: dict = field(default_factory=dict)


def _network() -> list[tuple]:
    """The anet_type's layers from the loss down to the input: ("L", kind, ...) for a layer,
    ("T", id) for a tag, ("S", id) for a skip back to a tag."""
    def ares(n: int, sub: list, down: bool = False) -> list:
        if not down:  # relu(x + block(x))
            return [("L", "relu"), ("L", "add", 1), ("L", "affine"), ("L", "con"), ("L", "relu"), ("L", "affine"), ("L", "con"), ("T", 1), *sub]
        # relu(avg_pool(x) + block(x)), the block's first convolution at stride 2
        return [("L", "relu"), ("L", "add", 2), ("L", "avg_pool"), ("S", 1), ("T", 2), ("L", "affine"), ("L", "con"), ("L", "relu"),
                ("L", "affine"), ("L", "con"), ("T", 1), *sub]

    net: list = [("L", "max_pool"), ("L", "relu"), ("L", "affine"), ("L", "con")]
    for width, blocks in ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1)):  # alevel4 .. alevel0
        for b in range(blocks):
            net = ares(width, net, down=width != 32 and b == 0)
    return [("L", "fc"), ("L", "avg_pool"), *net]


def _details(s: _Stream) -> Layer:
    version = s.str()
    if version in ("con_4", "con_5", "con_6"):
        params = s.tensor()
        filters, rows, cols, sy, sx, py, px = (s.int() for _ in range(7))
        s.alias(), s.alias()
        for _ in range(4):
            s.float()  # learning-rate and weight-decay multipliers
        if version != "con_4":
            s.bool()
        if version == "con_6":
            s.bool()
        return Layer("con", params=params, dims={"filters": filters, "kernel": (rows, cols), "stride": (sy, sx), "pad": (py, px)})
    if version in ("affine_", "affine_2"):
        params = s.tensor()
        s.alias(), s.alias()
        if s.int() != 0:
            raise ValueError("an affine layer not in convolution mode")
        if version == "affine_2" and s.bool():
            raise ValueError("a disabled affine layer")
        return Layer("affine", params=params)
    if version in ("relu_", "relu_2"):
        if version == "relu_2" and s.bool():
            raise ValueError("a disabled relu")
        return Layer("relu")
    if version in ("max_pool_2", "avg_pool_2"):
        rows, cols, sy, sx, py, px = (s.int() for _ in range(6))
        return Layer(version[:-2], dims={"kernel": (rows, cols), "stride": (sy, sx), "pad": (py, px)})
    if version == "add_prev_":
        return Layer("add")
    if version in ("fc_2", "fc_3"):
        outputs, inputs = s.int(), s.int()
        params = s.tensor()
        s.alias(), s.alias()
        if s.int() != 1:
            raise ValueError("an fc layer with a bias")
        for _ in range(4):
            s.float()
        if version == "fc_3":
            s.bool()
        return Layer("fc", params=params, dims={"outputs": outputs, "inputs": inputs})
    raise ValueError(f"byte {s.i}: layer {version!r} is not in dlib's face embedding network")


def read_network(data: bytes) -> tuple[tuple[float, float, float], list[Layer]]:
    """(the input's per-channel mean, R G B; the layers in input-to-output order) of the file."""
    s = _Stream(data)
    if s.int() != 1 or s.str() != "loss_metric_2":
        raise ValueError("not a dlib metric-learning network")
    s.float(), s.float()  # the loss's margin and distance threshold: training only
    net = _network()
    versions = [(t, s.int()) for t in net]
    if s.str() != "input_rgb_image_sized":
        raise ValueError("the network's input is not an RGB image of fixed size")
    mean = (s.float(), s.float(), s.float())
    if (s.int(), s.int()) != (CHIP, CHIP):
        raise ValueError(f"the network's input is not {CHIP} x {CHIP}")
    layers = []
    for t, version in reversed(versions):
        if t[0] != "L":
            layers.append(Layer("tag" if t[0] == "T" else "skip", tag=t[1]))
            continue
        layer = _details(s)
        if layer.kind != t[1]:
            raise ValueError(f"found {layer.kind} where the network has {t[1]}")
        layer.tag = t[2] if len(t) > 2 else 0
        for _ in range(3):
            s.bool()
        s.tensor(), s.tensor()  # the gradient and the cached output (empty in a saved network)
        if t is net[-1]:  # the layer on the input: one more tensor, and a sample expansion factor from version 3
            s.tensor()
            if version >= 3:
                s.int()
        elif version == 2:
            s.tensor()
        layers.append(layer)
    if s.i != len(data):
        raise ValueError(f"{len(data) - s.i} bytes left over: not the file this reader knows")
    return mean, layers


class _Graph:
    """The ONNX nodes and initializers as they are added."""

    def __init__(self, location: str):
        self.location, self.nodes, self.inits = location, [], []

    def weight(self, name: str, offset: int, dims: tuple[int, ...]) -> str:
        """An initializer stored in the dlib file at `offset`."""
        from onnx import TensorProto

        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims), data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(4 * int(np.prod(dims))))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.inits.append(t)
        return name

    def const(self, name: str, values: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}{len(self.nodes)}", **attrs))
        return out

    def pad_to(self, x: str, shape: tuple[int, ...], big: tuple[int, ...], name: str) -> str:
        """x zero-padded at the end of each dimension to `big` (channels, rows, columns)."""
        if shape == big:
            return x
        pads = np.array([0, 0, 0, 0, 0, *(b - s for s, b in zip(shape, big, strict=True))], np.int64)
        return self.node("Pad", [x, self.const(name, pads)])


def build_graph(data: bytes, location: str = SOURCE):
    """The ONNX model: input `chip` float32 N x 3 x 150 x 150 (RGB 0-255, an aligned face chip as
    dlib.get_face_chip makes it), output `embedding` N x 128. Each weight is an initializer stored
    externally in `location` (the dlib file) at its own offset."""
    from onnx import TensorProto, helper

    mean, layers = read_network(data)
    g = _Graph(location)
    # dlib's input layer: (pixel - the channel's mean) / 256
    x = g.node("Mul", [g.node("Sub", ["chip", g.const("mean", np.array(mean, np.float32).reshape(1, 3, 1, 1))]),
                       g.const("scale", np.array(1 / 256.0, np.float32))])
    shape = (3, CHIP, CHIP)  # channels, rows, columns of x
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for n, layer in enumerate(layers):
        if layer.kind == "con":
            d, (offset, count) = layer.dims, layer.params
            (kr, kc), (sy, sx), (py, px) = d["kernel"], d["stride"], d["pad"]
            w = (d["filters"], shape[0], kr, kc)
            if count != int(np.prod(w)) + d["filters"]:
                raise ValueError(f"layer {n}: {count} parameters for filters {w} and their biases")
            x = g.node("Conv", [x, g.weight(f"w{n}", offset, w), g.weight(f"b{n}", offset + 4 * int(np.prod(w)), (d["filters"],))],
                       kernel_shape=[kr, kc], strides=[sy, sx], pads=[py, px, py, px])
            shape = (d["filters"], (shape[1] + 2 * py - kr) // sy + 1, (shape[2] + 2 * px - kc) // sx + 1)
        elif layer.kind == "affine":  # x * gamma + beta per channel (batch norm, folded by dlib)
            offset, count = layer.params
            if count != 2 * shape[0]:
                raise ValueError(f"layer {n}: {count} parameters for {shape[0]} channels")
            c = (1, shape[0], 1, 1)
            x = g.node("Add", [g.node("Mul", [x, g.weight(f"g{n}", offset, c)]), g.weight(f"a{n}", offset + 4 * shape[0], c)])
        elif layer.kind == "relu":
            x = g.node("Relu", [x])
        elif layer.kind in ("max_pool", "avg_pool"):
            (kr, kc), (sy, sx), (py, px) = layer.dims["kernel"], layer.dims["stride"], layer.dims["pad"]
            if kr == 0:  # avg_pool_everything
                x, shape = g.node("GlobalAveragePool", [x]), (shape[0], 1, 1)
            else:
                x = g.node("MaxPool" if layer.kind == "max_pool" else "AveragePool", [x], kernel_shape=[kr, kc], strides=[sy, sx],
                           pads=[py, px, py, px])
                shape = (shape[0], (shape[1] + 2 * py - kr) // sy + 1, (shape[2] + 2 * px - kc) // sx + 1)
        elif layer.kind == "tag":
            tags[layer.tag] = (x, shape)
        elif layer.kind == "skip":
            x, shape = tags[layer.tag]
        elif layer.kind == "add":
            # dlib's add_prev: as big as the larger input in every dimension, the smaller one counted
            # as zero beyond its end (a stride-2 block's 3 x 3 beside its shortcut's 4 x 4)
            y, yshape = tags[layer.tag]
            big = (max(shape[0], yshape[0]), max(shape[1], yshape[1]), max(shape[2], yshape[2]))
            x = g.node("Add", [g.pad_to(x, shape, big, f"pad{n}a"), g.pad_to(y, yshape, big, f"pad{n}b")])
            shape = big
        elif layer.kind == "fc":
            d, (offset, count) = layer.dims, layer.params
            if count != d["inputs"] * d["outputs"] or d["inputs"] != int(np.prod(shape)):
                raise ValueError(f"layer {n}: fc of {d['inputs']} inputs on {shape}")
            x = g.node("MatMul", [g.node("Flatten", [x]), g.weight(f"w{n}", offset, (d["inputs"], d["outputs"]))])
    g.nodes[-1].output[0] = "embedding"
    graph = helper.make_graph(g.nodes, "dlib_face_resnet_v1", [helper.make_tensor_value_info("chip", TensorProto.FLOAT, ["N", 3, CHIP, CHIP])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="training.faces.dlib_graph")
    model.ir_version = 8
    helper.set_model_props(model, {"weights": location, "weights_sha256": hashlib.sha256(data).hexdigest()})
    return model


def check(graph: Path, weights: Path, data: Path, limit: int = 60) -> dict:
    """The graph against dlib's own encoder on the first `limit` photos of `data` with a face: the
    largest difference between the two embeddings of a face, and each one's time for one face."""
    import dlib

    from edge.vision.enrol import read_rgb
    from edge.vision.face import MODEL_FILES, FacePipeline, model_dir
    from edge.vision.models import open_session

    encoder = dlib.face_recognition_model_v1(str(weights))
    shape = dlib.shape_predictor(str(model_dir() / MODEL_FILES["shape5"]))
    pipe = FacePipeline()
    chips = []
    for f in sorted(data.glob("*.jpg")):
        img = read_rgb(f)
        if rects := pipe.detect(img):
            chips.append(dlib.get_face_chip(img, shape(img, rects[0]), size=CHIP))
        if len(chips) == limit:
            break
    sess = open_session(graph, external=(weights.name, weights.read_bytes()))
    ours_ms, dlib_ms, diff = [], [], 0.0
    for chip in chips:
        t0 = time.perf_counter()
        ours = sess.run(None, {"chip": chip.astype(np.float32).transpose(2, 0, 1)[None]})[0][0]
        t1 = time.perf_counter()
        theirs = np.asarray(encoder.compute_face_descriptor(chip), np.float32)
        t2 = time.perf_counter()
        ours_ms.append((t1 - t0) * 1000)
        dlib_ms.append((t2 - t1) * 1000)
        diff = max(diff, float(np.abs(ours - theirs).max()))
    return {"faces": len(chips), "max_abs_diff": diff, "onnx_ms_p50": round(float(np.median(ours_ms)), 2),
            "dlib_ms_p50": round(float(np.median(dlib_ms)), 2)}


def main() -> None:
    from edge.vision.face import MODEL_FILES, model_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("models/face_embed.onnx"))
    ap.add_argument("--check", type=Path, default=Path("../shared/data/faces"), help="photos to compare the graph with dlib on")
    args = ap.parse_args()
    weights = model_dir() / MODEL_FILES["encoder"]
    model = build_graph(weights.read_bytes(), weights.name)  # checked below by running it beside dlib (onnx's checker wants the file beside it)
    args.out.write_bytes(model.SerializeToString())
    report = {"out": str(args.out), "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(), "bytes": args.out.stat().st_size,
              "weights": weights.name, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    if args.check.is_dir():
        report |= check(args.out, weights, args.check)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
