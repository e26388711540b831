#!/usr/bin/env -S /usr/bin/python3
"""scene.py - seeded generator of captioned 64x64 shape scenes (stylora's shipped-model data).

A scene is a plain dict (JSON-serialisable) that fixes everything geometric:
    {"bg": "yellow", "kind": "single|group|pair", "groups": [G, ...], "rel": "above"|...|None}
    G = {"shape": "circle", "colour": "red", "size": "small", "count": 2,
         "where": "left"|...|None, "items": [[cx, cy], ...]}      centres in 64-px units
caption(scene) describes it in a fixed grammar (lower case, no punctuation):
    single: "a large red circle [on the left|on the right|at the top|at the bottom|in the center]
             on a yellow background"
    group:  "two small green stars [in the center|...] on a blue background"
    pair:   "two small red circles above a medium blue square on a yellow background"
            relations: above, below, to the left of, to the right of
render(scene, style, seed) draws the same scene plain or in a style ("plain", "outline",
"hatch", "neon", or "varied": a random look per image), antialiased by 4x supersampling. Only PIL and the standard library.
"""
import math
import random

from PIL import Image, ImageDraw, ImageFilter

SIZE = 64
SS = 4  # supersampling factor

COLOURS = {  # name -> RGB
    "red": (220, 40, 40), "green": (40, 165, 60), "blue": (40, 80, 220), "yellow": (245, 215, 40),
    "orange": (245, 135, 20), "purple": (135, 50, 180), "white": (245, 245, 245), "black": (25, 25, 25),
    "pink": (245, 135, 185), "gray": (128, 128, 128),
}
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
          "ring": "rings", "cross": "crosses"}
RADIUS = {"small": 6.0, "medium": 10.0, "large": 15.0}  # half extent in 64-px units
COUNT_WORD = {1: "a", 2: "two", 3: "three"}
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "center": "in the center"}
ANCHOR = {"left": (17, 32), "right": (47, 32), "top": (32, 17), "bottom": (32, 47), "center": (32, 32)}
RELS = {"above": "above", "below": "below", "left": "to the left of", "right": "to the right of"}


def _layout(n, r, cx, cy, vertical, rng):
    """Centres of n items of half-size r in a row (or column) around (cx, cy), kept on canvas."""
    gap = 2.3 * r + 3
    out = []
    for i in range(n):
        off = (i - (n - 1) / 2) * gap
        x, y = (cx, cy + off) if vertical else (cx + off, cy)
        x += rng.uniform(-1.5, 1.5)
        y += rng.uniform(-1.5, 1.5)
        x = min(max(x, r + 1), SIZE - r - 1)
        y = min(max(y, r + 1), SIZE - r - 1)
        out.append([round(x, 2), round(y, 2)])
    return out


def _group(rng, count, sizes, used):
    shape = rng.choice(SHAPES)
    colour = rng.choice([c for c in COLOURS if c not in used])
    return {"shape": shape, "colour": colour, "size": rng.choice(sizes), "count": count, "where": None,
            "items": []}


def sample_scene(rng):
    """One random scene from random.Random rng."""
    bg = rng.choice(list(COLOURS))
    kind = rng.choices(["single", "group", "pair"], weights=[4, 3, 4])[0]
    if kind == "single":
        g = _group(rng, 1, ["small", "medium", "large"], {bg})
        g["where"] = rng.choice(list(WHERE)) if rng.random() < 0.75 else None
        if g["where"]:
            cx, cy = ANCHOR[g["where"]]
        else:
            r = RADIUS[g["size"]]
            cx, cy = rng.uniform(r + 2, SIZE - r - 2), rng.uniform(r + 2, SIZE - r - 2)
        g["items"] = _layout(1, RADIUS[g["size"]], cx, cy, False, rng)
        return {"bg": bg, "kind": kind, "groups": [g], "rel": None}
    if kind == "group":
        n = rng.choice([2, 3])
        g = _group(rng, n, ["small", "medium"] if n == 2 else ["small"], {bg})
        g["where"] = rng.choice(list(WHERE)) if rng.random() < 0.6 else None
        cx, cy = ANCHOR[g["where"] or "center"]
        if g["where"] is None:
            cx, cy = cx + rng.uniform(-6, 6), cy + rng.uniform(-6, 6)
        g["items"] = _layout(n, RADIUS[g["size"]], cx, cy, g["where"] in ("left", "right"), rng)
        return {"bg": bg, "kind": kind, "groups": [g], "rel": None}
    rel = rng.choice(list(RELS))
    na = rng.choice([1, 1, 2])
    nb = rng.choice([1, 1, 2]) if na == 1 else 1
    a = _group(rng, na, ["small", "medium"] if na > 1 else ["small", "medium", "large"], {bg})
    b = _group(rng, nb, ["small", "medium"] if nb > 1 else ["small", "medium", "large"], {bg, a["colour"]})
    if (a["shape"], a["colour"]) == (b["shape"], b["colour"]):
        b["shape"] = SHAPES[(SHAPES.index(b["shape"]) + 1) % len(SHAPES)]
    # a sits on the named side of b
    pa, pb = {"above": ("top", "bottom"), "below": ("bottom", "top"), "left": ("left", "right"),
              "right": ("right", "left")}[rel]
    vertical = rel in ("left", "right")  # groups side by side stack as columns
    for g, p in ((a, pa), (b, pb)):
        cx, cy = ANCHOR[p]
        r = RADIUS[g["size"]]
        if g["count"] == 1 and g["size"] == "large":  # keep big ones apart from the centre line
            cx, cy = cx + (p == "right") * 2 - (p == "left") * 2, cy + (p == "bottom") * 2 - (p == "top") * 2
        g["items"] = _layout(g["count"], r, cx, cy, vertical, rng)
    return {"bg": bg, "kind": "pair", "groups": [a, b], "rel": rel}


def group_phrase(g):
    noun = g["shape"] if g["count"] == 1 else PLURAL[g["shape"]]
    return "%s %s %s %s" % (COUNT_WORD[g["count"]], g["size"], g["colour"], noun)


def caption(scene):
    gs = scene["groups"]
    if scene["kind"] == "pair":
        s = "%s %s %s" % (group_phrase(gs[0]), RELS[scene["rel"]], group_phrase(gs[1]))
    else:
        s = group_phrase(gs[0])
        if gs[0]["where"]:
            s += " " + WHERE[gs[0]["where"]]
    return s + " on %s %s background" % ("an" if scene["bg"] == "orange" else "a", scene["bg"])


# ------------------------------------------------------------------ drawing
def _star(cx, cy, r, rot):
    pts = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * 0.45
        a = rot + k * math.pi / 5 - math.pi / 2
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def shape_mask(shape, cx, cy, r, grow=0.0):
    """L-mode mask at SIZE*SS of one shape centred at (cx, cy) (64-px units); grow widens it."""
    m = Image.new("L", (SIZE * SS, SIZE * SS), 0)
    d = ImageDraw.Draw(m)
    s = SS
    X, Y, R, G = cx * s, cy * s, r * s, grow * s
    if shape == "circle":
        d.ellipse([X - R - G, Y - R - G, X + R + G, Y + R + G], fill=255)
    elif shape == "square":
        q = R * 0.88 + G
        d.rectangle([X - q, Y - q, X + q, Y + q], fill=255)
    elif shape == "triangle":
        h = R + G
        d.polygon([(X, Y - h * 1.05), (X + h * 1.05, Y + h * 0.8), (X - h * 1.05, Y + h * 0.8)], fill=255)
    elif shape == "star":
        d.polygon(_star(X, Y, R * 1.1 + G * 1.6, 0.0), fill=255)
    elif shape == "ring":
        d.ellipse([X - R - G, Y - R - G, X + R + G, Y + R + G], fill=255)
        ri = R * 0.55 - G
        if ri > 0:
            d.ellipse([X - ri, Y - ri, X + ri, Y + ri], fill=0)
    elif shape == "cross":
        w = R * 0.36 + G
        L = R + G
        d.rectangle([X - w, Y - L, X + w, Y + L], fill=255)
        d.rectangle([X - L, Y - w, X + L, Y + w], fill=255)
    else:
        raise ValueError(shape)
    return m


def _jitter(rgb, rng, amt=12):
    return tuple(max(0, min(255, int(c + rng.uniform(-amt, amt)))) for c in rgb)


def _mix(rgb, other, t):
    return tuple(int(round(a * (1 - t) + b * t)) for a, b in zip(rgb, other))


def _items(scene):
    for g in scene["groups"]:
        for cx, cy in g["items"]:
            yield g, cx, cy


def render(scene, style="plain", seed=0):
    """64x64 RGB PIL image of the scene in a style; seed only jitters colours/texture."""
    rng = random.Random(seed)
    big = SIZE * SS
    if style == "plain":
        img = Image.new("RGB", (big, big), _jitter(COLOURS[scene["bg"]], rng))
        for g, cx, cy in _items(scene):
            fill = Image.new("RGB", (big, big), _jitter(COLOURS[g["colour"]], rng))
            img.paste(fill, (0, 0), shape_mask(g["shape"], cx, cy, RADIUS[g["size"]]))
    elif style == "outline":  # pastel fills, thick black outlines, pastel paper
        img = Image.new("RGB", (big, big), _mix(COLOURS[scene["bg"]], (255, 250, 240), 0.6))
        for g, cx, cy in _items(scene):
            r = RADIUS[g["size"]]
            ink = Image.new("RGB", (big, big), (15, 15, 15))
            img.paste(ink, (0, 0), shape_mask(g["shape"], cx, cy, r, grow=1.6))
            fill = Image.new("RGB", (big, big), _mix(COLOURS[g["colour"]], (255, 255, 255), 0.45))
            img.paste(fill, (0, 0), shape_mask(g["shape"], cx, cy, r, grow=-0.2))
    elif style == "hatch":  # bold diagonal stripes of the colour on off-white, coloured edge
        bgc = COLOURS[scene["bg"]]
        img = Image.new("RGB", (big, big), _mix(bgc, (255, 255, 255), 0.55))
        d = ImageDraw.Draw(img)  # faint wide hatching of the paper, the other way
        faint = _mix(bgc, (255, 255, 255), 0.35)
        for k in range(-big, big, 8 * SS):
            d.line([(k, big), (k + big, 0)], fill=faint, width=SS)
        for g, cx, cy in _items(scene):
            r = RADIUS[g["size"]]
            col = COLOURS[g["colour"]] if g["colour"] != "white" else (185, 185, 195)
            stripes = Image.new("RGB", (big, big), (250, 248, 240))
            ds = ImageDraw.Draw(stripes)
            for k in range(-big, 2 * big, 4 * SS):
                ds.line([(k, 0), (k + big, big)], fill=col, width=int(2.0 * SS))
            edge = Image.new("RGB", (big, big), _mix(col, (0, 0, 0), 0.3))
            img.paste(edge, (0, 0), shape_mask(g["shape"], cx, cy, r, grow=0.7))
            img.paste(stripes, (0, 0), shape_mask(g["shape"], cx, cy, r, grow=-0.4))
    elif style == "neon":  # black night, glowing outlines in the shape's colour
        img = Image.new("RGB", (big, big), (8, 6, 14))
        # the named background survives as a dim vignette tint at the border
        tint = Image.new("RGB", (big, big), _mix(COLOURS[scene["bg"]], (0, 0, 0), 0.8))
        vm = Image.new("L", (big, big), 0)
        ImageDraw.Draw(vm).rectangle([0, 0, big - 1, big - 1], outline=255, width=3 * SS)
        img.paste(tint, (0, 0), vm.filter(ImageFilter.GaussianBlur(3 * SS)))
        for g, cx, cy in _items(scene):
            r = RADIUS[g["size"]]
            col = COLOURS[g["colour"]]
            if g["colour"] == "black":
                col = (90, 90, 110)
            outer = shape_mask(g["shape"], cx, cy, r, grow=0.9)
            inner = shape_mask(g["shape"], cx, cy, r, grow=-0.9)
            line = outer.copy()
            line.paste(0, (0, 0), inner)
            glow = line.filter(ImageFilter.GaussianBlur(2.5 * SS))
            glow = glow.point(lambda v: min(255, int(v * 2.2)))
            img.paste(Image.new("RGB", (big, big), col), (0, 0), glow)
            img.paste(Image.new("RGB", (big, big), _mix(col, (255, 255, 255), 0.6)), (0, 0), line)
    elif style == "varied":  # a random look per image: what the VAE decoder is fine-tuned on
        img = _render_varied(scene, rng, big)
    else:
        raise ValueError("unknown style %r" % style)
    return img.resize((SIZE, SIZE), Image.LANCZOS)


def _render_varied(scene, rng, big):
    """Random paper (plain, pale or dark), fill (solid, pale, stripes at a random angle and
    period, or none) and edge (none, dark ink, darker or lighter colour, optionally glowing)
    drawn independently, so no one combination is favoured: looks a general image codec must
    reproduce, of which the example styles are three points among many."""
    bgc = COLOURS[scene["bg"]]
    paper = rng.choice(["plain", "pale", "dark"])
    if paper == "plain":
        base = _jitter(bgc, rng)
    elif paper == "pale":
        base = _mix(bgc, (255, 250, 240), rng.uniform(0.3, 0.8))
    else:
        base = _mix(bgc, (5, 5, 10), rng.uniform(0.75, 0.97))
    img = Image.new("RGB", (big, big), base)
    if rng.random() < 0.3:  # faint lines across the paper
        d = ImageDraw.Draw(img)
        faint = _mix(base, (255, 255, 255) if paper == "dark" else (0, 0, 0), rng.uniform(0.05, 0.2))
        step, sgn = rng.randint(5, 10) * SS, rng.choice([-1, 1])
        for k in range(-big, 2 * big, step):
            d.line([(k, 0), (k + sgn * big, big)], fill=faint, width=SS)
    fill_kind = rng.choice(["solid", "pale", "stripes", "none"])
    edge_kind = rng.choice(["none", "ink", "dark", "light"])
    width = rng.uniform(0.5, 2.0)
    glow = rng.random() < 0.3
    for g, cx, cy in _items(scene):
        r, col = RADIUS[g["size"]], _jitter(COLOURS[g["colour"]], rng)
        if edge_kind != "none" or fill_kind == "none":
            ec = {"ink": (15, 15, 15), "dark": _mix(col, (0, 0, 0), 0.35),
                  "light": _mix(col, (255, 255, 255), 0.6), "none": col}[edge_kind]
            outer = shape_mask(g["shape"], cx, cy, r, grow=width)
            if glow:
                halo = outer.filter(ImageFilter.GaussianBlur(2.0 * SS)).point(lambda v: min(255, int(v * 1.8)))
                img.paste(Image.new("RGB", (big, big), col), (0, 0), halo)
            img.paste(Image.new("RGB", (big, big), ec), (0, 0), outer)
        inner = shape_mask(g["shape"], cx, cy, r, grow=-0.5 if fill_kind == "none" else 0.0)
        if fill_kind == "solid":
            img.paste(Image.new("RGB", (big, big), col), (0, 0), inner)
        elif fill_kind == "pale":
            img.paste(Image.new("RGB", (big, big), _mix(col, (255, 255, 255), rng.uniform(0.3, 0.6))), (0, 0), inner)
        elif fill_kind == "stripes":
            st = Image.new("RGB", (big, big), _mix(col, (255, 255, 255), 0.85))
            ds = ImageDraw.Draw(st)
            period, sgn = rng.randint(3, 6) * SS, rng.choice([-1, 1])
            for k in range(-big, 2 * big, period):
                ds.line([(k, 0), (k + sgn * big, big)], fill=col, width=int(rng.uniform(1.0, 2.5) * SS))
            img.paste(st, (0, 0), inner)
        else:  # hollow: the paper shows through
            img.paste(Image.new("RGB", (big, big), base), (0, 0), inner)
    return img


def make_dataset(n, seed):
    """n (scene, caption) pairs from one seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = sample_scene(rng)
        out.append((s, caption(s)))
    return out


def contact_sheet(images, cols=8, scale=2):
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * SIZE * scale, rows * SIZE * scale), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im.resize((SIZE * scale, SIZE * scale), Image.NEAREST),
                    ((i % cols) * SIZE * scale, (i // cols) * SIZE * scale))
    return sheet


if __name__ == "__main__":
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    data = make_dataset(n, 1)
    for s, c in data:
        print(c)
    for style in ("plain", "outline", "hatch", "neon", "varied"):
        contact_sheet([render(s, style, i) for i, (s, _) in enumerate(data)]).save("/tmp/shapes_%s.png" % style)
