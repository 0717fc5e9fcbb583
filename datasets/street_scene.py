"""Procedural street scenes: a pinhole-ish street view painted with cv2 into an image and labels.

The camera looks down a straight street: a horizon, a road triangle towards a vanishing point,
sidewalks, building facades along both sides, trees, a skyline, sky. Things (cars, trucks, people)
stand on the ground at a depth ``z`` (metres); their pixel size is ``focal / z`` and they are
painted far to near, so nearer objects occlude farther ones. Rows of queued cars and groups of
people are placed edge to edge, so same-class instances touch and often share a colour: separating
them needs boundaries, not colour.

Labels: void 0; stuff pixels carry their category id; thing pixels their instance. A thing whose
visible area after occlusion is below :func:`min_thing_area` becomes void, so every listed
segment is visible and large enough to learn from. Poles and the ego-vehicle hood are void too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cops.datasets.conversion import Category
from cops.datasets.panoptic_io import id2rgb

ROAD, SIDEWALK, BUILDING, VEGETATION, TERRAIN, SKY = 7, 8, 11, 21, 22, 23
PERSON, CAR, TRUCK = 24, 26, 27

SYNTHETIC_CATEGORIES: list[Category] = [
    Category(ROAD, "road", False, (128, 64, 128), "flat"),
    Category(SIDEWALK, "sidewalk", False, (244, 35, 232), "flat"),
    Category(BUILDING, "building", False, (70, 70, 70), "construction"),
    Category(VEGETATION, "vegetation", False, (107, 142, 35), "nature"),
    Category(TERRAIN, "terrain", False, (152, 251, 152), "nature"),
    Category(SKY, "sky", False, (70, 130, 180), "sky"),
    Category(PERSON, "person", True, (220, 20, 60), "human"),
    Category(CAR, "car", True, (0, 0, 142), "vehicle"),
    Category(TRUCK, "truck", True, (0, 0, 70), "vehicle"),
]
"""Cityscapes ids, names and colours for the classes the generator paints."""

THING_BASE = 1000
"""Thing segment id = category id × THING_BASE + instance number (1, 2, …); stuff id = category."""

_FIRST_THING = 32  # provisional label of the first thing painted; stuff labels are category ids
_LABELS = 256  # provisional labels fit a uint8 map (scenes hold at most ~35 things), for cv2.LUT

_STUFF_IDS = [c.id for c in SYNTHETIC_CATEGORIES if not c.isthing]

# Texture strength per stuff class (std of the smooth noise field, grey levels).
_TEXTURE = {ROAD: 7.0, SIDEWALK: 6.0, BUILDING: 6.0, VEGETATION: 22.0, TERRAIN: 14.0, SKY: 3.0}

_CAR_COLOURS = [
    (200, 200, 205), (30, 30, 35), (150, 150, 158), (160, 25, 30), (30, 55, 140),
    (95, 100, 105), (235, 235, 230), (20, 90, 60), (190, 160, 40),
]  # fmt: skip
_TRUCK_COLOURS = [(220, 220, 215), (200, 90, 30), (40, 70, 120), (120, 120, 110)]
_CLOTH_COLOURS = [
    (30, 30, 40), (200, 40, 40), (40, 60, 150), (220, 220, 220), (90, 70, 50),
    (60, 120, 60), (230, 180, 40), (120, 120, 125),
]  # fmt: skip
_SKIN_COLOURS = [(235, 200, 170), (200, 150, 110), (150, 100, 70), (90, 60, 40)]
_FACADE_COLOURS = [
    (150, 140, 130), (180, 170, 150), (120, 90, 80), (200, 195, 185), (110, 110, 115),
    (170, 120, 90),
]  # fmt: skip

Colour = tuple[int, int, int]


def min_thing_area(height: int, width: int) -> int:
    """Smallest visible area (pixels) a thing keeps; smaller remnants become void."""
    return max(4, round(height * width / 5000))


@dataclass
class _Canvas:
    """An RGB image and a label map painted together; things get provisional labels."""

    image: np.ndarray
    labels: np.ndarray
    thing_categories: list[int]

    def new_thing(self, category: int) -> int:
        """Register a thing instance and return its provisional label (_FIRST_THING + index)."""
        self.thing_categories.append(category)
        label = _FIRST_THING + len(self.thing_categories) - 1
        assert label < _LABELS, "too many things for a uint8 label map"
        return label

    def poly(
        self, points: Sequence[tuple[float, float]], colour: Colour, label: int | None
    ) -> None:
        """Fill a polygon; `label=None` paints the image only (texture, markings, shadows)."""
        pts = [np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)]
        cv2.fillPoly(self.image, pts, colour)
        if label is not None:
            cv2.fillPoly(self.labels, pts, label)

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, colour: Colour, label: int | None
    ) -> None:
        """Fill the axis-aligned rectangle with inclusive pixel corners (x0, y0)-(x1, y1)."""
        p0, p1 = (round(x0), round(y0)), (round(x1), round(y1))
        cv2.rectangle(self.image, p0, p1, colour, -1)
        if label is not None:
            cv2.rectangle(self.labels, p0, p1, label, -1)

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, colour: Colour, label: int | None
    ) -> None:
        """Fill an axis-aligned ellipse (radii at least one pixel)."""
        centre, axes = (round(cx), round(cy)), (max(1, round(rx)), max(1, round(ry)))
        cv2.ellipse(self.image, centre, axes, 0, 0, 360, colour, -1)
        if label is not None:
            cv2.ellipse(self.labels, centre, axes, 0, 0, 360, label, -1)


def _jitter(rng: np.random.Generator, colour: Colour, amount: float) -> Colour:
    """The colour shifted per channel by up to ±amount grey levels."""
    c = np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _pick(rng: np.random.Generator, palette: Sequence[Colour]) -> Colour:
    return palette[int(rng.integers(len(palette)))]


@dataclass
class _Street:
    """Camera and street geometry: image row/column of ground points at depth z, lateral x."""

    height: int
    width: int
    horizon: float  # image row of the horizon
    vanish_x: float  # image column of the vanishing point
    focal: float  # pixels per metre at 1 m depth
    cam_height: float  # metres
    road_half: float  # metres from the street centre to the kerb
    walk: float  # sidewalk width, metres
    z_near: float  # depth of the image's bottom row, metres

    def row(self, z: float) -> float:
        return self.horizon + self.focal * self.cam_height / z

    def col(self, x: float, z: float) -> float:
        return self.vanish_x + self.focal * x / z

    def scale(self, z: float) -> float:
        """Pixels per metre for an object at depth z."""
        return self.focal / z

    def depth_of_row(self, row: float) -> float:
        return self.focal * self.cam_height / max(row - self.horizon, 1e-3)


def _make_street(rng: np.random.Generator, height: int, width: int) -> _Street:
    horizon = height * rng.uniform(0.36, 0.5)
    z_near = rng.uniform(4.0, 6.0)
    cam_height = rng.uniform(1.3, 1.7)
    return _Street(
        height=height,
        width=width,
        horizon=horizon,
        vanish_x=width * rng.uniform(0.38, 0.62),
        focal=(height - horizon) * z_near / cam_height,  # the bottom row sees depth z_near
        cam_height=cam_height,
        road_half=rng.uniform(3.5, 6.0),
        walk=rng.uniform(2.0, 4.0),
        z_near=z_near,
    )


def _paint_sky(canvas: _Canvas, rng: np.random.Generator, st: _Street) -> None:
    """Fill everything with sky: a vertical gradient from a clear or overcast top colour."""
    top = np.array(
        _jitter(rng, (70, 120, 200), 20)
        if rng.random() < 0.7
        else _jitter(rng, (175, 180, 190), 15)
    )
    low = np.clip(top + rng.uniform(30, 70), 0, 255)
    t = np.clip(np.arange(st.height) / max(st.horizon, 1.0), 0, 1)[:, None]
    column = ((1 - t) * top + t * low).astype(np.uint8)[:, None, :]
    cv2.resize(column, (st.width, st.height), canvas.image, interpolation=cv2.INTER_NEAREST)
    canvas.labels[:] = SKY


def _paint_skyline(canvas: _Canvas, rng: np.random.Generator, st: _Street) -> None:
    """Distant blocks of varying height along the horizon, and tree blobs in front of them."""
    x = -rng.uniform(0, 0.1) * st.width
    base = st.horizon + 2
    while x < st.width:
        w = st.width * rng.uniform(0.04, 0.16)
        if rng.random() < 0.85:
            h = st.horizon * rng.uniform(0.08, 0.6)
            canvas.rect(
                x, base - h, x + w, base, _jitter(rng, _pick(rng, _FACADE_COLOURS), 20), BUILDING
            )
        x += w
    for _ in range(int(rng.integers(2, 7))):
        cx = rng.uniform(0, st.width)
        r = st.horizon * rng.uniform(0.04, 0.14)
        rx, colour = r * rng.uniform(1.0, 2.5), _jitter(rng, (60, 100, 45), 20)
        canvas.ellipse(cx, base - r * 0.6, rx, r, colour, VEGETATION)


def _paint_ground(canvas: _Canvas, rng: np.random.Generator, st: _Street) -> None:
    """Terrain below the horizon, then the sidewalk and road triangles and road markings."""
    h, w = st.height, st.width
    canvas.rect(-1, st.horizon + 1, w, h, _jitter(rng, (110, 140, 80), 25), TERRAIN)
    z_far, z_bottom = 400.0, st.z_near * 0.5
    outer = st.road_half + st.walk

    def band(x0: float, x1: float, z0: float, z1: float) -> list[tuple[float, float]]:
        return [
            (st.col(x0, z0), st.row(z0)),
            (st.col(x1, z0), st.row(z0)),
            (st.col(x1, z1), st.row(z1)),
            (st.col(x0, z1), st.row(z1)),
        ]

    walk_colour = _jitter(rng, (170, 165, 160) if rng.random() < 0.7 else (170, 120, 110), 15)
    canvas.poly(band(-outer, outer, z_far, z_bottom), walk_colour, SIDEWALK)
    road_colour = _jitter(rng, (85, 85, 90), 15)
    canvas.poly(band(-st.road_half, st.road_half, z_far, z_bottom), road_colour, ROAD)
    kerb = _jitter(rng, (190, 190, 185), 10)
    for side in (-1, 1):
        edge = side * st.road_half
        canvas.poly(band(edge - 0.1, edge + 0.1, z_far, z_bottom), kerb, None)
    paint = (235, 235, 225) if rng.random() < 0.8 else (230, 200, 60)
    dash, gap = rng.uniform(2.0, 4.0), rng.uniform(4.0, 8.0)
    z = z_bottom + rng.uniform(0, dash + gap)
    while z < 120:
        canvas.poly(band(-0.08, 0.08, z + dash, z), paint, None)
        z += dash + gap
    if rng.random() < 0.35:
        z0 = rng.uniform(8, 25)
        x = -st.road_half
        while x < st.road_half:
            canvas.poly(band(x, x + 0.5, z0 + 3, z0), paint, None)
            x += 1.0


@dataclass
class _Item:
    """Something standing on the ground, painted far to near."""

    z: float
    paint: Callable[[_Canvas], None]


def _paint_facades(canvas: _Canvas, rng: np.random.Generator, st: _Street) -> None:
    """Buildings along each side, fronts on the sidewalk's outer edge, with gaps between some.

    A ray to anything inside the street never crosses a facade plane, so facades are painted
    before every standing object; facades on one side cover disjoint columns.
    """
    outer = st.road_half + st.walk
    for side in (-1, 1):
        if rng.random() < 0.2:
            continue
        x = side * outer
        za = st.z_near * 0.3 + rng.uniform(0, 4)
        while za < 250:
            zb = za + rng.uniform(8, 30)
            if rng.random() < 0.85:
                top = rng.uniform(6, 25) - st.cam_height
                pts = [
                    (st.col(x, za), st.row(za)),
                    (st.col(x, zb), st.row(zb)),
                    (st.col(x, zb), st.horizon - st.focal * top / zb),
                    (st.col(x, za), st.horizon - st.focal * top / za),
                ]
                canvas.poly(pts, _jitter(rng, _pick(rng, _FACADE_COLOURS), 18), BUILDING)
            za = zb + (rng.uniform(3, 12) if rng.random() < 0.4 else 0.0)


def _tree_items(rng: np.random.Generator, st: _Street) -> list[_Item]:
    items: list[_Item] = []
    for _ in range(int(rng.integers(0, 6))):
        z = rng.uniform(st.z_near, 60)
        x = rng.choice([-1, 1]) * (st.road_half + st.walk * rng.uniform(0.5, 0.9))
        trunk_h, crown = rng.uniform(2.0, 3.5), rng.uniform(1.2, 2.5)
        trunk_c, crown_c = _jitter(rng, (80, 60, 45), 15), _jitter(rng, (55, 105, 40), 25)
        blobs = rng.uniform(-0.6, 0.6, (4, 2))

        def paint(c: _Canvas, z=z, x=x, th=trunk_h, cr=crown, tc=trunk_c, cc=crown_c, b=blobs):
            s, u, v = st.scale(z), st.col(x, z), st.row(z)
            c.rect(u - 0.12 * s, v - th * s, u + 0.12 * s, v, tc, VEGETATION)
            cy = v - (th + cr * 0.6) * s
            for dx, dy in b:
                c.ellipse(
                    u + dx * cr * s, cy + dy * cr * s, cr * s * 0.7, cr * s * 0.6, cc, VEGETATION
                )
            c.ellipse(u, cy, cr * s, cr * s * 0.8, cc, VEGETATION)

        items.append(_Item(z, paint))
    return items


def _pole_items(rng: np.random.Generator, st: _Street) -> list[_Item]:
    """Unlabelled street furniture (void): thin poles on the sidewalk."""
    items: list[_Item] = []
    for _ in range(int(rng.integers(0, 3))):
        z = rng.uniform(st.z_near, 40)
        x = rng.choice([-1, 1]) * (st.road_half + rng.uniform(0.3, 0.8))
        h, colour = rng.uniform(3, 6), _jitter(rng, (110, 110, 110), 20)

        def paint(c: _Canvas, z=z, x=x, h=h, colour=colour) -> None:
            s, u, v = st.scale(z), st.col(x, z), st.row(z)
            c.rect(u - 0.08 * s, v - h * s, u + 0.08 * s, v, colour, 0)

        items.append(_Item(z, paint))
    return items


def _trapezoid(
    u: float, y_low: float, y_high: float, half_low: float, half_high: float
) -> list[tuple[float, float]]:
    """Corners of a trapezoid symmetric about column u."""
    return [
        (u - half_low, y_low),
        (u + half_low, y_low),
        (u + half_high, y_high),
        (u - half_high, y_high),
    ]


def _paint_car(c: _Canvas, u: float, v: float, s: float, w: float, colour: Colour) -> float:
    """A car seen from behind, bottom centre (u, v), `s` px/m, width w metres; returns right x."""
    label = c.new_thing(CAR)
    x0, x1 = u - w * s / 2, u + w * s / 2
    c.ellipse(u, v, w * s * 0.6, max(1.0, 0.15 * s), (35, 35, 38), None)  # shadow
    tyre = (25, 25, 25)
    c.rect(x0 + 0.05 * w * s, v - 0.35 * s, x0 + 0.25 * w * s, v, tyre, label)
    c.rect(x1 - 0.25 * w * s, v - 0.35 * s, x1 - 0.05 * w * s, v, tyre, label)
    c.rect(x0, v - 0.95 * s, x1, v - 0.25 * s, colour, label)
    c.poly(_trapezoid(u, v - 0.95 * s, v - 1.45 * s, 0.43 * w * s, 0.3 * w * s), colour, label)
    c.poly(_trapezoid(u, v - 1.0 * s, v - 1.38 * s, 0.38 * w * s, 0.28 * w * s), (40, 50, 65), None)
    lamp = (200, 30, 30)
    c.rect(x0 + 0.03 * w * s, v - 0.8 * s, x0 + 0.15 * w * s, v - 0.65 * s, lamp, None)
    c.rect(x1 - 0.15 * w * s, v - 0.8 * s, x1 - 0.03 * w * s, v - 0.65 * s, lamp, None)
    c.rect(u - 0.25 * s, v - 0.55 * s, u + 0.25 * s, v - 0.42 * s, (225, 225, 210), None)
    return x1


def _paint_truck(c: _Canvas, u: float, v: float, s: float, colour: Colour) -> None:
    """A box truck seen from behind."""
    label = c.new_thing(TRUCK)
    w, h = 2.5, 3.4
    x0, x1 = u - w * s / 2, u + w * s / 2
    c.ellipse(u, v, w * s * 0.6, max(1.0, 0.15 * s), (35, 35, 38), None)
    c.rect(x0 + 0.05 * w * s, v - 0.5 * s, x0 + 0.3 * w * s, v, (25, 25, 25), label)
    c.rect(x1 - 0.3 * w * s, v - 0.5 * s, x1 - 0.05 * w * s, v, (25, 25, 25), label)
    c.rect(x0, v - h * s, x1, v - 0.45 * s, colour, label)
    darker = tuple(int(ch * 0.7) for ch in colour)
    c.rect(u - 0.02 * s, v - h * s, u + 0.02 * s, v - 0.45 * s, darker, None)
    c.rect(x0, v - 0.6 * s, x1, v - 0.45 * s, (60, 60, 60), None)


_PERSON_HALF_WIDTH = 0.185  # half the width across the arms, as a fraction of body height


def _paint_person(
    c: _Canvas, u: float, v: float, s: float, look: tuple[Colour, Colour, Colour, float]
) -> float:
    """A standing person, bottom centre (u, v), look = (shirt, trousers, skin, height in m).

    Returns the right edge of the arms, where a neighbour's left arm starts.
    """
    shirt, trousers, skin, tall = look
    label = c.new_thing(PERSON)
    hp = tall * s
    leg_w, body_w = 0.09 * hp, 0.26 * hp
    c.rect(u - 0.11 * hp, v - 0.48 * hp, u - 0.11 * hp + leg_w, v, trousers, label)
    c.rect(u + 0.11 * hp - leg_w, v - 0.48 * hp, u + 0.11 * hp, v, trousers, label)
    c.rect(u - body_w / 2, v - 0.82 * hp, u + body_w / 2, v - 0.46 * hp, shirt, label)
    left, right = u - _PERSON_HALF_WIDTH * hp, u + _PERSON_HALF_WIDTH * hp
    c.rect(left, v - 0.8 * hp, u - body_w / 2, v - 0.5 * hp, shirt, label)
    c.rect(u + body_w / 2, v - 0.8 * hp, right, v - 0.5 * hp, shirt, label)
    c.ellipse(u, v - 0.89 * hp, 0.065 * hp, 0.075 * hp, skin, label)
    return right


def _car_items(rng: np.random.Generator, st: _Street) -> list[_Item]:
    """Parked rows along the kerbs (overlapping in depth), queues across lanes (side by side)."""
    items: list[_Item] = []
    for side in (-1, 1):
        if rng.random() < 0.55:
            shared = _pick(rng, _CAR_COLOURS) if rng.random() < 0.5 else None
            x = side * (st.road_half - rng.uniform(0.9, 1.2))
            z = rng.uniform(st.z_near * 0.9, 25)
            for _ in range(int(rng.integers(2, 6))):
                colour = _jitter(rng, shared or _pick(rng, _CAR_COLOURS), 6 if shared else 18)
                w = rng.uniform(1.7, 1.95)

                def paint(c: _Canvas, z=z, x=x, w=w, colour=colour) -> None:
                    _paint_car(c, st.col(x, z), st.row(z), st.scale(z), w, colour)

                items.append(_Item(z, paint))
                z += rng.uniform(4.2, 5.0)
    for _ in range(int(rng.integers(1, 3))):
        z = rng.uniform(st.z_near * 1.1, 40)
        count = int(rng.integers(1, 4))
        shared = _pick(rng, _CAR_COLOURS) if rng.random() < 0.5 else None
        colours = [
            _jitter(rng, shared or _pick(rng, _CAR_COLOURS), 6 if shared else 18)
            for _ in range(count)
        ]
        widths = list(rng.uniform(1.7, 1.95, count))
        start = rng.uniform(-st.road_half, st.road_half - sum(widths))

        def paint(c: _Canvas, z=z, start=start, widths=widths, colours=colours) -> None:
            s, v = st.scale(z), st.row(z)
            left = st.col(start, z)
            for w, colour in zip(widths, colours, strict=True):
                # The next car's left edge is this car's right column: touching, not overlapping.
                left = _paint_car(c, left + w * s / 2, v, s, w, colour)

        items.append(_Item(z, paint))
    if rng.random() < 0.35:
        z = rng.uniform(st.z_near * 1.3, 50)
        x = rng.uniform(-st.road_half + 1.3, st.road_half - 1.3)
        colour = _jitter(rng, _pick(rng, _TRUCK_COLOURS), 15)

        def paint_truck(c: _Canvas, z=z, x=x, colour=colour) -> None:
            _paint_truck(c, st.col(x, z), st.row(z), st.scale(z), colour)

        items.append(_Item(z, paint_truck))
    return items


def _person_items(rng: np.random.Generator, st: _Street) -> list[_Item]:
    """Groups of people shoulder to shoulder on the sidewalks (sometimes crossing the road)."""
    items: list[_Item] = []
    for _ in range(int(rng.integers(1, 5))):
        z = rng.uniform(st.z_near, 35)
        count = int(rng.integers(1, 5))
        on_road = rng.random() < 0.2
        if on_road:
            x = rng.uniform(-st.road_half, st.road_half - 0.6 * count)
        else:
            x = rng.choice([-1, 1]) * (st.road_half + st.walk * rng.uniform(0.2, 0.6))
        same = rng.random() < 0.4
        shirt0, trousers0 = _pick(rng, _CLOTH_COLOURS), _pick(rng, _CLOTH_COLOURS)
        looks = [
            (
                _jitter(rng, shirt0 if same else _pick(rng, _CLOTH_COLOURS), 10),
                _jitter(rng, trousers0 if same else _pick(rng, _CLOTH_COLOURS), 10),
                _jitter(rng, _pick(rng, _SKIN_COLOURS), 8),
                rng.uniform(1.55, 1.9),
            )
            for _ in range(count)
        ]

        def paint(c: _Canvas, z=z, x=x, looks=looks) -> None:
            s, v = st.scale(z), st.row(z)
            right = None
            for look in looks:
                # Each person's left arm starts at the previous one's right arm: touching.
                half = _PERSON_HALF_WIDTH * look[3] * s
                u = st.col(x, z) if right is None else right + half
                right = _paint_person(c, u, v, s, look)

        items.append(_Item(z, paint))
    return items


def _paint_hood(canvas: _Canvas, rng: np.random.Generator, st: _Street) -> None:
    """The ego vehicle's bonnet along the bottom edge, void like in Cityscapes."""
    h = st.height * rng.uniform(0.05, 0.1)
    colour = _jitter(rng, (40, 40, 45), 15)
    canvas.ellipse(st.width / 2, st.height + h * 0.4, st.width * 0.7, h * 1.4, colour, 0)


def _finish(canvas: _Canvas, rng: np.random.Generator, st: _Street) -> np.ndarray:
    """Windows on buildings, smooth texture, brightness and colour cast, per-pixel noise.

    Returns the image in BGR channel order, as cv2 encodes it. cv2 arithmetic rather than numpy
    broadcasting: this is the generator's hot loop.
    """
    h, w = st.height, st.width
    labels = canvas.labels
    amp = np.full(_LABELS, 4.0, np.float32)
    for cat, strength in _TEXTURE.items():
        amp[cat] = strength
    amp[0] = 2.0
    coarse = rng.standard_normal((h // 6 + 2, w // 6 + 2), dtype=np.float32)
    shade = cv2.LUT(labels, amp) * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    py, px = (max(3, round(rng.uniform(6, 14) * h / 256)) for _ in range(2))
    rows = (np.arange(h) + int(rng.integers(py))) % py < py // 2
    cols = (np.arange(w) + int(rng.integers(px))) % px < px // 2
    windows = rows[:, None] & cols[None, :] & (labels == BUILDING)
    shade[windows] -= rng.uniform(25, 60)
    # Approximately gaussian pixel noise: the difference of two uniform bytes (std ≈ 104).
    noise = cv2.subtract(
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        dtype=cv2.CV_32F,
    )
    change = cv2.scaleAdd(noise, rng.uniform(2.0, 7.0) / 104.0, cv2.merge([shade] * 3))
    gain = rng.uniform(0.7, 1.2) * rng.uniform(0.93, 1.07, 3)
    to_bgr = np.diag(gain)[::-1].astype(np.float32)  # scales the channels and reverses them
    return cv2.add(cv2.transform(canvas.image, to_bgr), change, dtype=cv2.CV_8U)


def _segments(
    labels: np.ndarray, thing_categories: Sequence[int], min_area: int
) -> tuple[np.ndarray, list[dict]]:
    """Segment id of each provisional label and COCO segments_info; small things -> void."""
    h, w = labels.shape
    n = _FIRST_THING + len(thing_categories)
    counts = np.bincount(labels.ravel(), minlength=n)
    wide = labels.astype(np.intp)
    in_row = np.bincount((wide * h + np.arange(h)[:, None]).ravel(), minlength=n * h)
    in_col = np.bincount((wide * w + np.arange(w)[None, :]).ravel(), minlength=n * w)
    in_row, in_col = in_row.reshape(n, h) > 0, in_col.reshape(n, w) > 0
    lut = np.zeros(n, np.int64)
    kept = {label: (label, label) for label in _STUFF_IDS if counts[label]}  # label -> (id, cat)
    numbers: dict[int, int] = {}
    for label, cat in enumerate(thing_categories, start=_FIRST_THING):
        if counts[label] >= min_area:
            numbers[cat] = numbers.get(cat, 0) + 1
            kept[label] = (cat * THING_BASE + numbers[cat], cat)
    segments = []
    for label, (seg, cat) in kept.items():
        lut[label] = seg
        y0, y1 = int(in_row[label].argmax()), h - 1 - int(in_row[label, ::-1].argmax())
        x0, x1 = int(in_col[label].argmax()), w - 1 - int(in_col[label, ::-1].argmax())
        bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
        segments.append(
            {"id": seg, "category_id": cat, "area": int(counts[label]), "bbox": bbox, "iscrowd": 0}
        )
    return lut, segments


@dataclass(frozen=True)
class RenderedScene:
    """A generated scene in the form that is cheapest to write: BGR pixels and a label table."""

    bgr: np.ndarray  # uint8 [H, W, 3], blue first
    labels: np.ndarray  # uint8 [H, W], provisional labels
    label_ids: np.ndarray  # int64, segment id of each provisional label (0 = void)
    segments: list[dict]  # COCO segments_info

    @property
    def image(self) -> np.ndarray:
        """The RGB image [H, W, 3] (a view)."""
        return self.bgr[..., ::-1]

    @property
    def ids(self) -> np.ndarray:
        """Segment ids [H, W] (int64), as in the panoptic PNG."""
        return self.label_ids[self.labels]

    def panoptic_bgr(self) -> np.ndarray:
        """The panoptic PNG's pixels in BGR order: the id encoding looked up per label."""
        table = np.zeros((_LABELS, 1, 3), np.uint8)
        table[: self.label_ids.size, 0] = id2rgb(self.label_ids)[:, ::-1]
        return cv2.LUT(cv2.merge([self.labels] * 3), table)


def render_scene(rng_seed: int | Sequence[int], height: int, width: int) -> RenderedScene:
    """Paint one street scene from a seed; a pure function, so any worker reproduces any image."""
    rng = np.random.default_rng(rng_seed)
    st = _make_street(rng, height, width)
    canvas = _Canvas(
        image=np.empty((height, width, 3), np.uint8),
        labels=np.empty((height, width), np.uint8),
        thing_categories=[],
    )
    _paint_sky(canvas, rng, st)
    _paint_skyline(canvas, rng, st)
    _paint_ground(canvas, rng, st)
    _paint_facades(canvas, rng, st)
    items = _tree_items(rng, st) + _pole_items(rng, st)
    items += _car_items(rng, st) + _person_items(rng, st)
    for item in sorted(items, key=lambda it: -it.z):
        item.paint(canvas)
    if rng.random() < 0.25:
        _paint_hood(canvas, rng, st)
    bgr = _finish(canvas, rng, st)
    min_area = min_thing_area(height, width)
    label_ids, segments = _segments(canvas.labels, canvas.thing_categories, min_area)
    return RenderedScene(bgr, canvas.labels, label_ids, segments)


def generate_scene(
    rng_seed: int | Sequence[int], height: int, width: int
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One street scene: RGB uint8 [H, W, 3], segment ids int64 [H, W], segments_info."""
    scene = render_scene(rng_seed, height, width)
    return scene.image, scene.ids, scene.segments
