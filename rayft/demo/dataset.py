"""Synthetic "order extraction" dataset used by ``rayft demo``.

Task: a short, free-form shop order message (many templates, word orders,
casings, quantities written as digits *or* words, plural item names) must be
turned into a single-line JSON object with fixed keys in a fixed order::

    {"name":"Maya","item":"mug","quantity":3,"color":"blue","city":"Paris","day":"friday"}

The answer is always ``json.dumps(obj, separators=(",", ":"))`` (compact: ~30
tokens, at most 35, so CPU generation with ``max_new_tokens=48`` is cheap).

Normalization rules (all stated in :data:`INSTRUCTION`): ``item`` singular and
lowercase, ``quantity`` an integer (``"three"`` -> ``3``), ``color`` and ``day``
lowercase (``"Fri"`` -> ``"friday"``), ``name`` and ``city`` copied as written.

Why this task: the demo trains LoRA on SmolLM2-135M-Instruct for only a few
minutes on CPU, so the task has to be one a tiny model learns fast. Structured
extraction is mostly *format* (fixed keys, order, quoting) plus *copying* spans
from the input, which small models pick up in ~100 steps, while an untuned base
model essentially never reproduces the exact format. That makes exact match a
meaningful, large, and honest before/after metric. The vocabulary (dozens of
names, items, colours, cities) and 20+ templates make memorisation useless, so
held-out rows are a real test. Everything is stdlib-only and deterministic.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEPARATORS = (",", ":")  # compact JSON: fewer tokens to generate on CPU
KEYS = ("name", "item", "quantity", "color", "city", "day")

INSTRUCTION = (
    "Extract the order from the message as a compact one-line JSON object with exactly "
    'these keys in this order: "name", "item", "quantity", "color", "city", "day". '
    "Use the singular lowercase item, quantity as an integer, lowercase color and "
    "full lowercase weekday."
)

NAMES = [
    "Maya", "Liam", "Sofia", "Noah", "Aisha", "Lucas", "Emma", "Mateo", "Chloe",
    "Omar", "Hana", "Diego", "Priya", "Felix", "Zara", "Hugo", "Nina", "Ivan",
    "Leila", "Tomas", "Grace", "Kenji", "Elena", "Jonas", "Amara", "Ravi",
    "Clara", "Marco", "Yuki", "Sam", "Olivia", "Ben", "Fatima", "Leo", "Ingrid",
    "Pablo", "Mei", "Oscar", "Lena", "Arjun",
]
# singular -> plural
ITEMS = {
    "mug": "mugs", "notebook": "notebooks", "lamp": "lamps", "backpack": "backpacks",
    "umbrella": "umbrellas", "scarf": "scarves", "candle": "candles", "towel": "towels",
    "pillow": "pillows", "jacket": "jackets", "kettle": "kettles", "blanket": "blankets",
    "bottle": "bottles", "teapot": "teapots", "wallet": "wallets", "sweater": "sweaters",
    "plate": "plates", "bowl": "bowls", "glove": "gloves", "hat": "hats",
    "sock": "socks", "vase": "vases", "chair": "chairs", "rug": "rugs",
    "box": "boxes", "brush": "brushes", "watch": "watches", "glass": "glasses",
    "pencil": "pencils", "basket": "baskets", "clock": "clocks", "apron": "aprons",
    "helmet": "helmets", "tent": "tents", "cushion": "cushions", "tray": "trays",
}
COLORS = [
    "red", "blue", "green", "black", "white", "yellow", "orange", "purple", "pink",
    "grey", "brown", "navy", "teal", "beige", "silver", "gold", "olive", "maroon",
    "turquoise", "lavender",
]
CITIES = [
    "Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Dublin",
    "Oslo", "Warsaw", "Athens", "Zurich", "Amsterdam", "Brussels", "Copenhagen",
    "Stockholm", "Helsinki", "Budapest", "Milan", "Lyon", "Munich", "Porto",
    "Seville", "Krakow", "Toronto", "Chicago", "Boston", "Denver", "Austin",
    "Seattle", "Tokyo", "Osaka", "Seoul", "Sydney", "Melbourne", "Cairo",
    "Nairobi", "Lima", "Bogota", "Montreal",
]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve",
]

# Slots: {name} {qty} {item} {color} {city} {day}. {item} is plural when qty != 1.
TEMPLATES = [
    "Hi, this is {name}. I'd like {qty} {color} {item} delivered to {city} on {day}.",
    "{name} here: please send {qty} {color} {item} to {city}, arriving {day}.",
    "Order for {name} - {qty} x {color} {item}, ship to {city}, deliver {day}.",
    "Can you get {qty} {color} {item} to {city} by {day}? Thanks, {name}",
    "Deliver to {city} on {day}: {qty} {item} in {color}. Customer: {name}.",
    "{day} delivery please! {name} wants {qty} {color} {item} in {city}.",
    "Hello! {name} from {city} ordering {qty} {item}, colour {color}, for {day}.",
    "Please ship {qty} {item} ({color}) to {name} in {city}. Needed by {day}.",
    "{city} store pickup on {day} for {name}: {qty} {color} {item}.",
    "hey it's {name}, need {qty} {color} {item} sent over to {city} for {day}",
    "New order: customer {name}, item {item}, qty {qty}, color {color}, city {city}, day {day}.",
    "I, {name}, would like to order {qty} {color} {item} from you. Address is in {city}; {day} works best.",
    "Could {qty} {color} {item} reach {city} on {day}? Ordering on behalf of {name}.",
    "For {day}: {qty} {color} {item} to {city}. Name on the order is {name}.",
    "{name} ({city}) - {qty} {item}, {color} please, delivery {day}.",
    "Quick order from {name}: {qty} {item}, {color} colour, to {city}, ideally {day}.",
    "We need {qty} {color} {item} at our {city} office by {day}. Regards, {name}",
    "Reserve {qty} {color} {item} for {name}; I'll pick up in {city} on {day}.",
    "Ship to: {city}. Date: {day}. Buyer: {name}. Goods: {qty} {color} {item}.",
    "{name} is buying {qty} {item} in {color}, to be sent to {city} this {day}.",
    "Good morning, could I order {qty} {item}? Colour {color}. Deliver to {city} on {day}. {name}",
    "Send {name} {qty} {color} {item} at the {city} address, {day} if possible.",
    "{qty} {color} {item} for {name}, {city}, {day}.",
    "My name is {name} and I want {qty} {color} {item} shipped to {city} before {day}.",
]


def _render_day(rng: random.Random, day: str) -> str:
    """Weekday as it appears in the message: 'friday', 'Friday', 'FRIDAY' or 'Fri'."""
    r = rng.random()
    if r < 0.45:
        return day.capitalize()
    if r < 0.75:
        return day
    if r < 0.85:
        return day.upper()
    return day[:3].capitalize()


def _render_color(rng: random.Random, color: str) -> str:
    return color.capitalize() if rng.random() < 0.2 else color


def _render_qty(rng: random.Random, qty: int) -> str:
    if qty < len(NUMBER_WORDS) and rng.random() < 0.4:
        return NUMBER_WORDS[qty]
    return str(qty)


def make_example(rng: random.Random) -> dict:
    """Draw one alpaca-format example ``{"instruction", "input", "output"}``."""
    name = rng.choice(NAMES)
    item = rng.choice(sorted(ITEMS))
    color = rng.choice(COLORS)
    city = rng.choice(CITIES)
    day = rng.choice(DAYS)
    qty = rng.choice([1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 20, 24, 30])
    template = rng.choice(TEMPLATES)
    message = template.format(
        name=name,
        qty=_render_qty(rng, qty),
        item=item if qty == 1 else ITEMS[item],
        color=_render_color(rng, color),
        city=city,
        day=_render_day(rng, day),
    )
    if template.startswith("{"):  # e.g. "three red mugs ..." / "friday delivery ..."
        message = message[0].upper() + message[1:]
    obj = dict(zip(KEYS, (name, item, qty, color, city, day)))
    return {
        "instruction": INSTRUCTION,
        "input": message,
        "output": json.dumps(obj, separators=SEPARATORS),
    }


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` deterministic examples with no duplicate ``input`` strings."""
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could not generate {n} unique rows")
        ex = make_example(rng)
        if ex["input"] in seen:
            continue
        seen.add(ex["input"])
        rows.append(ex)
    return rows


def write_jsonl(path: str | Path, n: int = 600, seed: int = 0) -> Path:
    """Write ``make_rows(n, seed)`` to ``path`` as JSON Lines; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in make_rows(n, seed):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


SHIPPED_PATH = Path(__file__).with_name("extract_orders.jsonl")

if __name__ == "__main__":
    print(write_jsonl(SHIPPED_PATH, 600, 0))
