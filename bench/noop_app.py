"""The cost of HTTP alone: an idiomatic FastAPI endpoint that takes a transaction-shaped
pydantic body and returns a constant, served by uvicorn with the service's settings.

    python -m bench.noop_app PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from bench.transaction_body import Transaction


class Score(BaseModel):
    transaction_id: str | int
    fraud_probability: float
    decision: str


app = FastAPI()


@app.post("/v1/fraud/score")
async def score(transaction: Transaction) -> Score:
    return Score(
        transaction_id=transaction.transaction_id, fraud_probability=0.0, decision="approve"
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
