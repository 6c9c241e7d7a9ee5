"""Scenes of the synthetic world: coloured shapes on a dark background, rendered with PIL, and captions about them.

Each image holds 1..max_objects objects with pairwise different colours and pairwise different shapes, so a caption
word names exactly one object: "a [MASK] circle" is answered by the circle's colour, "a red [MASK]" by the red
object's shape. Colours and shapes are drawn uniformly and independently of the caption's other words, so a masked
colour or shape word can be predicted from the image only — from text alone the best guess is chance (1/6 for
colours, 1/4 for shapes). Relation words (left of / right of / above / below) and size words (small / large) are
likewise decided by the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": (10, 14), "large": (17, 22)}
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def class_id(colour: str, shape: str) -> int:
    """Detector class of a (colour, shape) object; 0 is background."""
    return 1 + list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape)


NUM_CLASSES = 1 + len(COLOURS) * len(SHAPES)


@dataclass
class SceneObject:
    colour: str
    shape: str
    size: str
    box: tuple[int, int, int, int]
    """(x1, y1, x2, y2) inclusive pixel bounds of the drawn shape."""

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2


def sample_scene(rng: np.random.Generator, image_size: int, max_objects: int) -> list[SceneObject]:
    """Objects with distinct colours and shapes at non-overlapping positions (fewer if they do not fit)."""
    count = int(rng.integers(1, max_objects + 1))
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    shapes = rng.choice(SHAPES, size=min(count, len(SHAPES)), replace=False)
    objects: list[SceneObject] = []
    for colour, shape in zip(colours, shapes, strict=False):
        size = str(rng.choice(list(SIZES)))
        lo, hi = SIZES[size]
        for _ in range(50):
            side = int(rng.integers(lo, hi + 1))
            x1 = int(rng.integers(1, image_size - side - 1))
            y1 = int(rng.integers(1, image_size - side - 1))
            box = (x1, y1, x1 + side - 1, y1 + side - 1)
            if all(_apart(box, o.box) for o in objects):
                objects.append(SceneObject(str(colour), str(shape), size, box))
                break
    return objects


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int = 2) -> bool:
    return a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1]


def render(objects: list[SceneObject], image_size: int, rng: np.random.Generator) -> Image.Image:
    """A dark, slightly noisy background with the objects drawn on it."""
    noise = rng.integers(0, 30, size=(image_size, image_size, 3), dtype=np.uint8)
    image = Image.fromarray(noise, mode="RGB")
    draw = ImageDraw.Draw(image)
    for obj in objects:
        x1, y1, x2, y2 = obj.box
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x1, y1, x2, y2), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x1, y1, x2, y2), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)
        else:  # diamond
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    return image


def relation(a: SceneObject, b: SceneObject) -> list[str]:
    """Where a is relative to b, along the axis on which they are further apart."""
    (ax, ay), (bx, by) = a.centre, b.centre
    if abs(ax - bx) >= abs(ay - by):
        return ["left", "of"] if ax < bx else ["right", "of"]
    return ["above"] if ay < by else ["below"]


def caption(objects: list[SceneObject], rng: np.random.Generator) -> list[str]:
    """A caption (list of words) about the scene; every colour, shape, size and relation word is true of it."""
    order = [objects[i] for i in rng.permutation(len(objects))]
    if len(order) == 1:
        o = order[0]
        if rng.random() < 0.5:
            return ["a", o.size, o.colour, o.shape, "."]
        return ["there", "is", "a", o.colour, o.shape, "in", "the", "picture", "."]
    style = rng.random()
    if style < 0.45:
        a, b = order[0], order[1]
        return ["a", a.colour, a.shape, *relation(a, b), "a", b.colour, b.shape, "."]
    if style < 0.75:
        words = [COUNT_WORDS[len(order)], "objects", ":"]
        for i, o in enumerate(order):
            if i:
                words.append("and" if i == len(order) - 1 else ",")
            words += ["a", o.colour, o.shape]
        return [*words, "."]
    a, b = order[0], order[1]
    return ["there", "is", "a", a.colour, a.shape, "and", "a", b.size, b.colour, b.shape, "."]


CORPUS_NOUNS = ("house", "car", "dog", "book", "garden", "river", "window", "door", "table", "bird")
CORPUS_ADJS = ("old", "new", "quiet", "bright", "big", "little", "warm", "cold")
CORPUS_VERBS = ("saw", "painted", "found", "liked", "drew")
CORPUS_NAMES = ("anna", "ben", "chris", "dana", "eli")


def corpus_line(rng: np.random.Generator) -> str:
    """A text-only sentence over a vocabulary that overlaps the captions' (the 1:1 text corpus)."""

    def pick(options) -> str:
        return str(options[int(rng.integers(0, len(options)))])

    style = rng.random()
    if style < 0.35:
        return f"the {pick(CORPUS_NOUNS)} was {pick(CORPUS_ADJS)} and {pick(list(COLOURS))} ."
    if style < 0.7:
        who, did = pick(CORPUS_NAMES), pick(CORPUS_VERBS)
        return f"{who} {did} a {pick(list(COLOURS))} {pick(SHAPES)} on the {pick(CORPUS_NOUNS)} ."
    return f"there is a {pick(CORPUS_ADJS)} {pick(CORPUS_NOUNS)} left of the {pick(CORPUS_NOUNS)} ."
