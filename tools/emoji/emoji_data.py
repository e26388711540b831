"""emoji_data.py - reads emoji-datasource's emoji.json and turns it into captioned, split records.

Shared by build_dataset.py, gen_styles.py and tests/emoji/test_emoji_data.py; stdlib only.
The JSON schema followed is the one documented in the package's README ("Using the data":
name, unified, image, category, subcategory, sort_order, has_img_google, skin_variations
keyed by the modifier code point(s), each with its own unified and image).
What it does not do: read or write images (build_dataset.py and gen_styles.py do).
"""
import hashlib
import json
import os
import re
import unicodedata

SPLITS = ("train", "val", "demo", "style")

# Split by a stable hash of the base emoji's unified code, so a split depends on nothing but the
# emoji itself: adding or removing other emoji never moves it (no ranking, no random state).
# Skin-tone variations follow their base emoji, so a demo prompt never leaks in through a variant.
# Bands of u = first 8 hex digits of sha256("emoji-split-v1:" + unified) / 2^32:
#   [0, DEMO)            demo   (if eligible, else train): the demo's prompts are drawn from these
#   [DEMO, DEMO+STYLE)   style  (if eligible, else train): the example styles are drawn from these
#   [DEMO+STYLE, +VAL)   val    (any category): held out of pretraining to measure its loss
#   rest                 train
# demo and style need an emoji a person can name on sight: not Flags (many flags differ only in
# stripe order at 64 px) and not Component (bare skin-tone swatches and hair pieces).
SPLIT_SALT = "emoji-split-v1:"
BAND_DEMO, BAND_STYLE, BAND_VAL = 0.025, 0.025, 0.03
NOT_NAMEABLE = ("Flags", "Component")

# The CLDR names of the Fitzpatrick modifiers (Unicode's emoji-test.txt spells them so).
SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone",
              "1F3FD": "medium skin tone", "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}

# Country names that take "the" in English ("the flag of the netherlands").
THE_COUNTRIES = {"bahamas", "gambia", "maldives", "netherlands", "philippines", "comoros",
                 "seychelles", "vatican city", "european union", "united nations",
                 "caribbean netherlands", "british indian ocean territory",
                 "french southern territories", "czech republic", "isle of man"}
THE_COUNTRIES.discard("isle of man")  # listed to say it was considered: "the flag of isle of man" reads wrong


def split_hash(unified):
    """Returns u in [0, 1) from sha256 of the base emoji's unified code (upper case)."""
    h = hashlib.sha256((SPLIT_SALT + unified.upper()).encode("ascii")).hexdigest()
    return int(h[:8], 16) / 2.0 ** 32


def split_of(unified, category):
    """Returns the split ("train", "val", "demo", "style") of a base emoji; see the bands above."""
    u = split_hash(unified)
    nameable = category not in NOT_NAMEABLE
    if u < BAND_DEMO:
        return "demo" if nameable else "train"
    if u < BAND_DEMO + BAND_STYLE:
        return "style" if nameable else "train"
    if u < BAND_DEMO + BAND_STYLE + BAND_VAL:
        return "val"
    return "train"


def _ascii(s):
    """Folds accents and typographic quotes to ASCII ("Côte d’Ivoire" -> "Cote d'Ivoire") so the
    model's own BPE vocabulary sees one spelling."""
    s = s.replace("\u2019", "'").replace("&", " and ").replace("*", " asterisk ").replace("#", " hash ")
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if not unicodedata.combining(c)).encode("ascii", "ignore").decode()


def _clean(s):
    """Lower case, ASCII, single spaces; keeps letters, digits, spaces, hyphens, commas, dots,
    apostrophes and parentheses; no trailing punctuation."""
    s = _ascii(s).lower().replace(":", ",")
    s = re.sub(r"[^a-z0-9 ,.'()\-]", " ", s)
    s = re.sub(r"\s*,\s*", ", ", s)
    s = re.sub(r"\s+", " ", s).strip()
    return s.strip(" ,.-")


# Words in -s that are singular (or not nouns) where they end a head: "a father christmas".
SINGULAR_S = {"christmas", "aries", "pisces", "sos", "vs", "americas", "leftwards", "rightwards",
              "cars", "rhinoceros"}
PREPOSITIONS = ("with", "in", "of", "on", "and", "for", "from", "under", "at", "without")


def _article(phrase):
    """Returns the indefinite article for a noun phrase, or "" for a plural ("sparkles",
    "two hearts", "men holding hands", "pinched fingers"). The head noun is the last word before
    the first preposition or later -ing verb ("person lifting weights" -> person); a head in -s
    but not -ss/-us/-is reads as plural."""
    words = phrase.split(",")[0].split()
    head = words
    for i, w in enumerate(words[1:], 1):
        if w in PREPOSITIONS or w.endswith("ing"):
            head = words[:i]
            break
    first, last = words[0], head[-1]
    if first in ("two", "three", "men", "women", "people") or (
            last.endswith("s") and last not in SINGULAR_S and not last.endswith(("ss", "us", "is", "'s"))):
        return ""
    return "an" if first[0] in "aeiou" or first in ("hourglass",) else "a"


CATEGORY_WORD = {  # the first word of each category, as the "a rocket, travel"
    "Smileys & Emotion": "smileys", "People & Body": "people", "Animals & Nature": "animals",
    "Food & Drink": "food", "Travel & Places": "travel", "Activities": "activities",
    "Objects": "objects", "Symbols": "symbols", "Flags": "flags", "Component": "component"}


def caption(entry, tone_key=None, use_short_name=False):
    """Returns the caption of an emoji.json entry, or of its skin variation tone_key ("1F3FD" or
    "1F3FB-1F3FF"). The issue's examples fix the rule: "a red apple", "a grinning face",
    "a rocket, travel": article + lower-case name, and the category's first word only when the
    name is a single word (a bare "a rocket" or "a mouse" says least). Country and subdivision
    flags read "the flag of france"; skin tones append ", medium skin tone" (two different tones:
    ", light skin tone, dark skin tone", in the order of the code points). use_short_name takes
    the name from short_name instead (records() does so where two names collide)."""
    name = entry.get("name") or entry.get("short_name") or entry["unified"]
    if use_short_name and entry.get("short_name"):
        name = entry["short_name"].replace("_", " ")
    sub = entry.get("subcategory", "")
    if sub in ("country-flag", "subdivision-flag") and name.lower().endswith(" flag"):
        country = _clean(name[:-5])
        the = "the " if (country in THE_COUNTRIES or country.endswith(("islands", "states", "emirates"))
                         or country.startswith(("united ", "u.s. ")) or "republic" in country) else ""
        cap = "the flag of " + the + country
    else:
        phrase = _clean(name)
        art = _article(phrase)
        cap = (art + " " + phrase) if art else phrase
        if len(phrase.split()) == 1:
            cap += ", " + CATEGORY_WORD.get(entry.get("category", ""), _clean(entry.get("category", "")))
    if tone_key:
        tones = []
        for t in tone_key.upper().split("-"):
            if t not in SKIN_TONES:
                raise ValueError("%s: skin variation '%s' is not a Fitzpatrick modifier" % (entry["unified"], tone_key))
            if t not in tones:
                tones.append(t)
        cap += ", " + ", ".join(SKIN_TONES[t] for t in tones)
    return cap


def load_entries(json_path):
    """Reads emoji.json; raises ValueError naming the file and the first malformed entry."""
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError("%s: cannot read emoji.json: %s" % (json_path, e))
    if not isinstance(data, list):
        raise ValueError("%s: expected a JSON array of emoji entries" % json_path)
    for i, e in enumerate(data):
        for k in ("unified", "image", "category"):
            if not isinstance(e, dict) or not isinstance(e.get(k), str):
                raise ValueError("%s: entry %d has no string '%s'" % (json_path, i, k))
    return data


def records(entries, img_dir):
    """Returns one record per image that exists in img_dir: dicts with file, caption, category,
    subcategory, split, unified (the image's own code), base (the base emoji's code), tone.
    Ordered by sort_order, then the variation key, so the manifest is byte-stable."""
    have = set(os.listdir(img_dir)) if os.path.isdir(img_dir) else set()
    # Captions name one emoji each (the fidelity judge ranks all of them): where two entries share
    # a name (1F935's Unicode name is "MAN IN TUXEDO", like 1F935-200D-2642-FE0F's), the entries
    # whose short_name says something else ("person_in_tuxedo") take it.
    by_cap = {}
    for i, e in enumerate(entries):
        by_cap.setdefault(caption(e), []).append(i)
    short = set()
    for idx in by_cap.values():
        if len(idx) > 1:
            short.update(i for i in idx if entries[i].get("short_name") and
                         caption(entries[i], use_short_name=True) != caption(entries[i]))
    out = []
    order = sorted(range(len(entries)), key=lambda i: (entries[i].get("sort_order", i), entries[i]["unified"]))
    for i in order:
        e = entries[i]
        sp = split_of(e["unified"], e["category"])
        variants = [(None, e)] + sorted((e.get("skin_variations") or {}).items())
        for key, v in variants:
            if v["image"] not in have:
                continue
            out.append({"file": v["image"], "caption": caption(e, key, i in short), "category": e["category"],
                        "subcategory": e.get("subcategory", ""), "split": sp,
                        "unified": v["unified"], "base": e["unified"], "tone": key or ""})
    return out


MANIFEST_COLUMNS = ("file", "caption", "category", "subcategory", "split", "unified", "base", "tone")


def manifest_text(recs):
    """Returns the TSV manifest (header line, then one line per record)."""
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for r in recs:
        lines.append("\t".join(r[c] for c in MANIFEST_COLUMNS))
    return "\n".join(lines) + "\n"


def read_manifest(path):
    """Reads a manifest written by manifest_text; raises ValueError naming the file and line."""
    with open(path, encoding="utf-8") as f:
        rows = f.read().splitlines()
    if not rows or tuple(rows[0].split("\t")) != MANIFEST_COLUMNS:
        raise ValueError("%s: not an emoji manifest (header must be %s)" % (path, "\\t".join(MANIFEST_COLUMNS)))
    out = []
    for n, line in enumerate(rows[1:], 2):
        cols = line.split("\t")
        if len(cols) != len(MANIFEST_COLUMNS):
            raise ValueError("%s:%d: %d columns, expected %d" % (path, n, len(cols), len(MANIFEST_COLUMNS)))
        out.append(dict(zip(MANIFEST_COLUMNS, cols)))
    return out


def write_atomic(path, data):
    """Writes bytes or str to path through a temporary file and a rename, so a reader never sees
    half a file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
