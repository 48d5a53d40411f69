"""The seed's design, kept as a baseline: FastAPI + pydantic + the statistics module + a log line
per request, analyses run with asyncio.gather on the event loop.

    python -m bench.seed_baseline --port 8001

Needs the ``bench`` extra (fastapi, pydantic). bench.http --target p2 measures the service
against it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import time

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

log = logging.getLogger("seed")

app = FastAPI(title="seed baseline")


class Payload(BaseModel):
    numbers: list[float] = Field(min_length=1, max_length=1_000_000)
    text: str = Field(min_length=1, max_length=5_000_000)


async def analyze_numbers(numbers: list[float]) -> dict[str, float]:
    return {
        "minimum": min(numbers),
        "maximum": max(numbers),
        "mean": statistics.mean(numbers),
        "median": statistics.median(numbers),
        "standard_deviation": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
        "count": len(numbers),
    }


async def analyze_text(text: str) -> dict[str, int]:
    return {
        "word_count": len(text.split()),
        "character_count": len(text),
        "character_count_no_spaces": len(re.sub(r"\s", "", text)),
        "sentence_count": len([s for s in re.split(r"[.!?]+", text) if s.strip()]),
        "paragraph_count": len([p for p in re.split(r"\n\s*\n", text) if p.strip()]),
    }


@app.get("/ready")
async def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/payload")
async def payload(body: Payload) -> dict[str, object]:
    started = time.perf_counter()
    numeric, text = await asyncio.gather(analyze_numbers(body.numbers), analyze_text(body.text))
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info("analysed payload: %d numbers, %d characters", len(body.numbers), len(body.text))
    return {"numeric_analysis": numeric, "text_analysis": text, "processing_time_ms": elapsed_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, server_header=False, log_level="info")


if __name__ == "__main__":
    main()
