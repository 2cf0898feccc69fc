"""DenseNet-BC with per-layer kept channels: the ``densenet:`` family (`models.network`).

DenseNet-BC for CIFAR (Huang et al. 2017): a 3x3 stem conv, dense blocks whose layers each see
the concatenation of the block's input and every earlier layer's output (BN, ReLU, 1x1 conv to
the bottleneck, BN, ReLU, 3x3 conv to the growth rate), transitions between blocks (BN, ReLU,
1x1 conv, 2x2 average pooling) and a final BN, ReLU, global pooling and linear classifier.
Here every layer says which channels of its concatenated input it reads, so a connection to an
earlier layer can be thinned or gone.  One token per part, after the header::

    c<stem channels>                       the stem conv
    d<input channels>x<bottleneck>o<out>   a dense layer (appends <out> channels)
    t<input channels>o<out>                a transition (its output starts the next block)
    f<input channels>                      the final BN and classifier (last token)

``<input channels>`` is a channel set over the current concatenation (`models.widths_common`:
``0-23.30``).  ``densenet100_12`` (DenseNet-BC, L=100, k=12: 0.8M parameters) and the other
``densenet<L>_<k>`` names (L = 6n+4) expand to the full network (`named_densenet`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.widths_common import (
    construct,
    decode_set,
    encode_set,
    fail,
    key_of,
    parse_header,
    positive_int,
    split_tokens,
)

PREFIX = "densenet"
_NAME = re.compile(r"densenet(\d+)_(\d+)")
_LAYER = re.compile(r"d([\d.\-]+)x(\w+?)o(\w+)")
_TRANSITION = re.compile(r"t([\d.\-]+)o(\w+)")


@dataclass(frozen=True)
class Part:
    kind: str  # "d" dense layer, "t" transition, "f" final BN + classifier
    inputs: tuple[int, ...]  # channels of the current concatenation it reads
    bottleneck: int = 0  # dense layers only
    out: int = 0  # dense layers and transitions

    def encode(self) -> str:
        spelled = encode_set(self.inputs)
        if self.kind == "d":
            return f"d{spelled}x{self.bottleneck}o{self.out}"
        return f"t{spelled}o{self.out}" if self.kind == "t" else f"f{spelled}"


@dataclass(frozen=True)
class DenseNetW:
    input_size: int
    num_classes: int
    stem: int
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        if self.stem < 1:
            raise ValueError("the stem needs >= 1 channel")
        if not self.parts or self.parts[-1].kind != "f":
            raise ValueError("the last part must be the final f<channels>")
        for index, (part, width, _) in enumerate(self.walk()):
            where = f"part {index + 1} ({part.encode()})"
            if part.kind == "f" and index != len(self.parts) - 1:
                raise ValueError(f"{where}: f may only come last")
            if not part.inputs or part.inputs[-1] >= width or part.inputs[0] < 0:
                raise ValueError(f"{where}: input channels must lie in 0..{width - 1}")
            if part.kind != "f" and part.out < 1 or part.kind == "d" and part.bottleneck < 1:
                raise ValueError(f"{where}: widths must be >= 1")

    @classmethod
    def full(cls, depth: int, growth: int, input_size: int = 32, num_classes: int = 10):
        """DenseNet-BC(depth, growth) for CIFAR: 3 blocks of (depth-4)/6 layers, bottleneck
        4k, stem 2k, transitions halve the channels."""
        if depth < 10 or (depth - 4) % 6 or growth < 1:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 (e.g. 40, 100), got {depth}")
        parts, width = [], 2 * growth
        for block in range(3):
            for _ in range((depth - 4) // 6):
                parts.append(Part("d", tuple(range(width)), 4 * growth, growth))
                width += growth
            if block < 2:
                parts.append(Part("t", tuple(range(width)), out=width // 2))
                width //= 2
        parts.append(Part("f", tuple(range(width))))
        return cls(input_size, num_classes, 2 * growth, tuple(parts))

    def walk(self):
        """Per part: ``(part, channels of the concatenation it reads from, spatial size)``."""
        width, size = self.stem, self.input_size
        for part in self.parts:
            yield part, width, size
            if part.kind == "d":
                width += part.out
            elif part.kind == "t":
                width, size = part.out, size // 2

    # -- the string ---------------------------------------------------------------------------

    def encode(self) -> str:
        head = f"{PREFIX}:in{self.input_size}_cls{self.num_classes}"
        return "|".join([head, f"c{self.stem}", *(part.encode() for part in self.parts)])

    @classmethod
    def decode(cls, text: str) -> DenseNetW:
        tokens = split_tokens(text, PREFIX)
        size, classes = parse_header(text, tokens[0])
        if len(tokens) < 3 or not tokens[1].startswith("c"):
            fail(text, 2, tokens[1] if len(tokens) > 1 else "", "expected c<stem>, parts, f<set>")
        stem = positive_int(text, 2, tokens[1], "stem width", tokens[1][1:])
        width, parts = stem, []
        for position, token in enumerate(tokens[2:], start=3):
            part = _parse_part(text, position, token, width)
            width = width + part.out if part.kind == "d" else part.out or width
            parts.append(part)
        return construct(text, tokens, lambda: cls(size, classes, stem, tuple(parts)))

    def key(self) -> str:
        return key_of(self.encode())

    # -- what it costs, without building it ---------------------------------------------------

    def cost(self):
        from models.costs import Cost

        stem = 27 * self.stem
        total = Cost(stem * self.input_size**2, stem)
        for part, _, size in self.walk():
            n = len(part.inputs)
            if part.kind == "d":
                b, o = part.bottleneck, part.out
                total += Cost(n * b * size**2, n * b + 2 * n)  # BN, ReLU, 1x1 conv
                total += Cost(9 * b * o * size**2, 9 * b * o + 2 * b)  # BN, ReLU, 3x3 conv
            elif part.kind == "t":
                total += Cost(n * part.out * size**2, n * part.out + 2 * n)
            else:
                total += Cost(n * self.num_classes, n * self.num_classes + 2 * n)
                total += Cost(0, self.num_classes)
        return total

    def build(self, dropout: float = 0.2):
        """A freshly initialised module (`dropout` is unused: DenseNet-BC here has none)."""
        from models.widths_modules import WidthDenseNet

        return WidthDenseNet(self)


def _parse_part(text: str, position: int, token: str, width: int) -> Part:
    def channels(spelled: str) -> tuple[int, ...]:
        try:
            return decode_set(spelled, width)
        except ValueError as error:
            fail(text, position, token, str(error))
        raise AssertionError

    if match := _LAYER.fullmatch(token):
        bottleneck = positive_int(text, position, token, "bottleneck", match.group(2))
        out = positive_int(text, position, token, "out", match.group(3))
        return Part("d", channels(match.group(1)), bottleneck, out)
    if match := _TRANSITION.fullmatch(token):
        out = positive_int(text, position, token, "out", match.group(2))
        return Part("t", channels(match.group(1)), 0, out)
    if token.startswith("f"):
        return Part("f", channels(token[1:]))
    fail(text, position, token, "expected d<set>x<bottleneck>o<out>, t<set>o<out> or f<set>")
    raise AssertionError


def named_densenet(name: str, input_size: int, num_classes: int) -> DenseNetW | None:
    """``densenet<L>_<k>`` as a full DenseNet-BC network; None for other names."""
    match = _NAME.fullmatch(name)
    if not match:
        return None
    return DenseNetW.full(int(match.group(1)), int(match.group(2)), input_size, num_classes)
