"""Build `orders_pairs.jsonl`, the preference data of jobs/configs/dpo_tiny.yaml, from the demo's
order-extraction rows: `chosen` is the reference JSON, `rejected` the same answer with one typical
mistake (plural item, quantity as a word, capitalised day, missing key, keys out of order, or prose
around the JSON). Deterministic: `python jobs/data/make_orders_pairs.py` rewrites the same file."""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "rayft" / "demo" / "extract_orders.jsonl"
WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
         10: "ten", 12: "twelve", 20: "twenty"}


def corrupt(answer: dict, rng: random.Random) -> str:
    wrong = dict(answer)
    mistake = rng.choice(["plural", "word", "day", "missing", "order", "prose"])
    if mistake == "plural":
        wrong["item"] += "s"
    elif mistake == "word":
        wrong["quantity"] = WORDS.get(answer["quantity"], str(answer["quantity"]))
    elif mistake == "day":
        wrong["day"] = answer["day"].capitalize()
    elif mistake == "missing":
        wrong.pop(rng.choice(["color", "city", "day"]))
    elif mistake == "order":
        wrong = dict(reversed(list(wrong.items())))
    text = json.dumps(wrong, separators=(",", ":"))
    return f"Sure! Here is the order: {text}" if mistake == "prose" else text


def main(count: int = 240) -> None:
    rng = random.Random(0)
    rows = [json.loads(line) for line in SOURCE.read_text().splitlines()][-count:]
    with (HERE / "orders_pairs.jsonl").open("w") as out:
        for row in rows:
            prompt = f"{row['instruction']}\n\n{row['input']}"
            pair = {"prompt": prompt, "chosen": row["output"], "rejected": corrupt(json.loads(row["output"]), rng)}
            out.write(json.dumps(pair) + "\n")


if __name__ == "__main__":
    main()
