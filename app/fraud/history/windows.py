"""The history in memory: each card's and terminal's payments in time order, and the window
features of a payment computed from them exactly as the benchmark defines them.

- Customer windows: (t - N days, t], the payment itself included, over the card's payments
  up to it in (time, transaction id) order.
- Terminal windows: (t - 7 - N days, t - 7 days]; risk is the share labelled fraud, 0 where
  there are none; a payment with no label counts as genuine.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_right
from dataclasses import dataclass

from app.fraud.features import TERMINAL_DELAY_DAYS, WINDOWS_DAYS
from app.fraud.history.records import DAY_US, Payment, TransactionId, Windows

_TIE_BITS = 65  # ints take 64 bits of tie, strings come after them
_AFTER_ALL_TIES = (1 << _TIE_BITS) - 1


def order_key(time_us: int, transaction_id: TransactionId) -> int:
    """One integer that sorts payments by time, then by transaction id: integer ids by
    value, before string ids (which, tied to the microsecond, order by a hash of their
    text)."""
    if isinstance(transaction_id, int):
        tie = transaction_id + (1 << 63)
    else:
        digest = hashlib.blake2b(transaction_id.encode(), digest_size=8).digest()
        tie = (1 << 64) + int.from_bytes(digest, "big")
    return (time_us << _TIE_BITS) | tie


def _after(time_us: int) -> int:
    """The key just after every payment at `time_us`."""
    return (time_us << _TIE_BITS) | _AFTER_ALL_TIES


class Timeline:
    """One card's or terminal's payments in order: keys, amounts, fraud flags."""

    __slots__ = ("amounts", "frauds", "ids", "keys")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.ids: list[TransactionId] = []
        self.amounts = array("d")
        self.frauds = bytearray()

    def insert(self, key: int, transaction_id: TransactionId, amount: float, fraud: bool) -> None:
        at = bisect_right(self.keys, key)  # late payments take their place in time
        self.keys.insert(at, key)
        self.ids.insert(at, transaction_id)
        self.amounts.insert(at, amount)
        self.frauds.insert(at, fraud)

    def remove(self, key: int) -> None:
        at = bisect_right(self.keys, key) - 1
        del self.keys[at], self.ids[at], self.amounts[at], self.frauds[at]

    def set_fraud(self, key: int, fraud: bool) -> None:
        at = bisect_right(self.keys, key) - 1
        if at >= 0 and self.keys[at] == key:
            self.frauds[at] = fraud

    def drop_before(self, time_us: int) -> int:
        """Forget payments older than `time_us`; how many there were."""
        cut = bisect_right(self.keys, _after(time_us - 1))
        if cut:
            del self.keys[:cut], self.ids[:cut], self.amounts[:cut], self.frauds[:cut]
        return cut


@dataclass(slots=True)
class Known:
    """A recorded payment and its label (None: none yet)."""

    payment: Payment
    fraud: bool | None


class HistoryIndex:
    """Every recorded payment within the retention, by transaction id, card and terminal."""

    def __init__(self) -> None:
        self.payments: dict[TransactionId, Known] = {}
        self.customers: dict[TransactionId, Timeline] = {}
        self.terminals: dict[TransactionId, Timeline] = {}

    def add(self, payment: Payment, fraud: bool | None = None) -> None:
        key = order_key(payment.time_us, payment.transaction_id)
        self.payments[payment.transaction_id] = Known(payment, fraud)
        transaction_id = payment.transaction_id
        self.customers.setdefault(payment.customer_id, Timeline()).insert(
            key, transaction_id, payment.amount, False
        )
        self.terminals.setdefault(payment.terminal_id, Timeline()).insert(
            key, transaction_id, payment.amount, bool(fraud)
        )

    def remove(self, transaction_id: TransactionId) -> None:
        """Undo `add` (a batch whose write failed)."""
        known = self.payments.pop(transaction_id)
        payment = known.payment
        key = order_key(payment.time_us, payment.transaction_id)
        self.customers[payment.customer_id].remove(key)
        self.terminals[payment.terminal_id].remove(key)

    def set_label(self, transaction_id: TransactionId, fraud: bool) -> bool | None:
        """Record a label; the previous one (None: there was none). Raises KeyError for a
        payment not in the history."""
        known = self.payments[transaction_id]
        previous, known.fraud = known.fraud, fraud
        payment = known.payment
        key = order_key(payment.time_us, payment.transaction_id)
        self.terminals[payment.terminal_id].set_fraud(key, fraud)
        return previous

    def windows(self, payment: Payment) -> Windows:
        """The payment's window features from what is recorded now (it included)."""
        t = payment.time_us
        customer = self.customers.get(payment.customer_id) or Timeline()
        end = bisect_right(customer.keys, order_key(t, payment.transaction_id))
        counts, averages = [], []
        for days in WINDOWS_DAYS:
            start = bisect_right(customer.keys, _after(t - days * DAY_US))
            count = end - start
            counts.append(count)
            averages.append(sum(customer.amounts[start:end]) / count if count else payment.amount)
        terminal = self.terminals.get(payment.terminal_id) or Timeline()
        near = bisect_right(terminal.keys, _after(t - TERMINAL_DELAY_DAYS * DAY_US))
        terminal_counts, risks = [], []
        for days in WINDOWS_DAYS:
            far = bisect_right(terminal.keys, _after(t - (TERMINAL_DELAY_DAYS + days) * DAY_US))
            count = near - far
            terminal_counts.append(count)
            risks.append(sum(terminal.frauds[far:near]) / count if count else 0.0)
        return Windows(
            customer_nb_tx=(counts[0], counts[1], counts[2]),
            customer_avg_amount=(averages[0], averages[1], averages[2]),
            terminal_nb_tx=(terminal_counts[0], terminal_counts[1], terminal_counts[2]),
            terminal_risk=(risks[0], risks[1], risks[2]),
        )

    def drop_before(self, time_us: int) -> int:
        """Forget payments older than `time_us`; how many were forgotten."""
        old = [i for i, k in self.payments.items() if k.payment.time_us < time_us]
        for transaction_id in old:
            del self.payments[transaction_id]
        for timelines in (self.customers, self.terminals):
            for entity in list(timelines):
                timeline = timelines[entity]
                timeline.drop_before(time_us)
                if not timeline.keys:
                    del timelines[entity]
        return len(old)
