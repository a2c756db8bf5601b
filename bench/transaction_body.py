"""A transaction as a user of FastAPI or BentoML would declare it: plain pydantic fields,
the shape of deepserve's own. Shared by the FastAPI no-op and the BentoML peer; imports only
pydantic, so it loads in their environments too."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Transaction(BaseModel):
    transaction_id: str | int
    customer_id: str | int
    terminal_id: str | int
    amount: float
    timestamp: datetime
    customer_nb_tx_1d: int
    customer_nb_tx_7d: int
    customer_nb_tx_30d: int
    customer_avg_amount_1d: float
    customer_avg_amount_7d: float
    customer_avg_amount_30d: float
    terminal_nb_tx_1d: int
    terminal_nb_tx_7d: int
    terminal_nb_tx_30d: int
    terminal_risk_1d: float
    terminal_risk_7d: float
    terminal_risk_30d: float
