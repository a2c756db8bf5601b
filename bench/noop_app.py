"""The cost of HTTP alone: a FastAPI endpoint that takes a transaction-shaped pydantic body
and returns a constant, served by uvicorn.

    python -m bench.noop_app PORT [lean]

By default the idiomatic one (a response model, uvicorn's defaults). `lean`: the leanest
honest one, the body still validated by pydantic, the answer a plain dict (no response
model to validate and serialize), on uvloop and httptools.
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


lean = FastAPI()


@lean.post("/v1/fraud/score")
async def score_lean(transaction: Transaction) -> dict:
    return {
        "transaction_id": transaction.transaction_id,
        "fraud_probability": 0.0,
        "decision": "approve",
    }


if __name__ == "__main__":
    options = {"host": "127.0.0.1", "port": int(sys.argv[1]), "log_level": "warning"}
    if sys.argv[2:] == ["lean"]:
        uvicorn.run(lean, loop="uvloop", http="httptools", access_log=False, **options)
    else:
        uvicorn.run(app, access_log=False, **options)
