"""The history in memory: each card's and terminal's payments in time order, and the window
features of a payment computed from them exactly as the benchmark defines them.

- Customer windows: (t - N days, t], the payment itself included, over the card's payments
  up to it in (time, transaction id) order.
- Terminal windows: (t - 7 - N days, t - 7 days]; risk is the share labelled fraud, 0 where
  there are none; a payment with no label counts as genuine.
- Against the card's earlier payments in (t - 30 days, t), the payment excluded: its amount
  over their mean (1 where there are none, or their mean is 0; at most a million), and how
  many of those in (t - 14 days, t) were over three times that mean. Summed oldest first,
  as `training/` and the Redis store sum them, so that all three agree to the last bit.
- Within the terminal's known window (t - 37 days, t - 7 days]: the days since its first and
  its last payment labelled fraud (0 where none is), and the share of fraud among its last
  three payments there (0 where there are none).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right

from app.fraud.features import (
    HIGH_AMOUNT_DAYS,
    HIGH_AMOUNT_TIMES,
    MEAN_AMOUNT_DAYS,
    OVER_MEAN_CAP,
    RECENT_KNOWN,
    TERMINAL_DELAY_DAYS,
    WINDOWS_DAYS,
)
from app.fraud.history.records import DAY_US, Payment, TransactionId, Windows


def tie_key(transaction_id: TransactionId) -> tuple[int, int | str]:
    """Orders payments of the same instant as the benchmark does, by transaction id:
    integers by value, before strings, which sort by their text."""
    if isinstance(transaction_id, int):
        return (0, transaction_id)
    return (1, transaction_id)


_COMPLEMENT = str.maketrans("0123456789", "9876543210")


def sortable_id(transaction_id: TransactionId) -> str:
    """The id as text that sorts bytewise (UTF-8) as `tie_key` orders ids, and that ends
    before any NUL that follows it: for stores that order members as bytes (Redis)."""
    if isinstance(transaction_id, int):
        digits = str(abs(transaction_id))
        if transaction_id >= 0:
            return f"0p{len(digits):04d}{digits}"
        # Negative: more digits, or larger ones, sort first.
        return f"0n{9999 - len(digits):04d}{digits.translate(_COMPLEMENT)}"
    # NUL and \x01 are escaped to sort below every other character, so that a prefix
    # still sorts first.
    return "1" + transaction_id.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")


class Timeline:
    """One card's or terminal's payments in (time, transaction id) order, in arrays: some
    350,000 payments of 37 days take tens of megabytes, not hundreds."""

    __slots__ = ("amounts", "entity", "frauds", "ids", "times")

    def __init__(self, entity: TransactionId) -> None:
        self.entity = entity
        self.times = array("q")  # microseconds
        self.ids: list[TransactionId] = []
        self.amounts = array("d")
        self.frauds = bytearray()

    def position(self, time_us: int, transaction_id: TransactionId) -> int:
        """Where a payment sits (or would): after every earlier one, and after those of the
        same instant with a smaller id."""
        at = bisect_left(self.times, time_us)
        if at < len(self.times) and self.times[at] == time_us:  # a shared instant
            end = bisect_right(self.times, time_us, at)
            at = bisect_left(self.ids, tie_key(transaction_id), at, end, key=tie_key)
        return at

    def insert(
        self, time_us: int, transaction_id: TransactionId, amount: float, fraud: bool
    ) -> None:
        at = self.position(time_us, transaction_id)  # late payments take their place in time
        self.times.insert(at, time_us)
        self.ids.insert(at, transaction_id)
        self.amounts.insert(at, amount)
        self.frauds.insert(at, fraud)

    def index_of(self, time_us: int, transaction_id: TransactionId) -> int:
        at = self.position(time_us, transaction_id)
        if at == len(self.ids) or self.ids[at] != transaction_id:
            raise KeyError(transaction_id)
        return at

    def remove(self, time_us: int, transaction_id: TransactionId) -> None:
        at = self.index_of(time_us, transaction_id)
        del self.times[at], self.ids[at], self.amounts[at], self.frauds[at]

    def up_to(self, time_us: int) -> int:
        """How many payments are at `time_us` or before."""
        return bisect_right(self.times, time_us)

    def drop_before(self, time_us: int) -> int:
        """Forget payments older than `time_us`; how many there were."""
        cut = bisect_left(self.times, time_us)
        if cut:
            del self.times[:cut], self.ids[:cut], self.amounts[:cut], self.frauds[:cut]
        return cut


_NOBODY = Timeline("")  # a card or terminal with no payment yet; never added to


class Known:
    """A recorded payment, its label (None: none yet), and the timelines it is in."""

    __slots__ = ("amount", "customer", "fraud", "terminal", "time_us", "transaction_id")

    def __init__(
        self, payment: Payment, customer: Timeline, terminal: Timeline, fraud: bool | None
    ) -> None:
        self.transaction_id = payment.transaction_id
        self.customer, self.terminal = customer, terminal
        self.amount, self.time_us, self.fraud = payment.amount, payment.time_us, fraud

    @property
    def payment(self) -> Payment:
        return Payment(
            self.transaction_id,
            self.customer.entity,
            self.terminal.entity,
            self.amount,
            self.time_us,
        )


def _against_earlier_mean(
    customer: Timeline, t: int, before: int, amount: float
) -> tuple[float, int]:
    """The amount over the mean of the card's payments of the 30 days up to `before` (the
    payment's place), and how many of those within 14 days were over three times that
    mean."""
    amounts, times = customer.amounts, customer.times
    start = bisect_right(times, t - MEAN_AMOUNT_DAYS * DAY_US, 0, before)
    total = 0.0
    for earlier in amounts[start:before]:  # oldest first, not `sum`: its order is its own
        total += earlier
    count = before - start
    if not count:
        return 1.0, 0
    mean = total / count
    bar = HIGH_AMOUNT_TIMES * mean
    recent = bisect_right(times, t - HIGH_AMOUNT_DAYS * DAY_US, start, before)
    high = 0
    for earlier in amounts[recent:before]:
        if earlier > bar:
            high += 1
    return (min(amount / mean, OVER_MEAN_CAP) if mean > 0 else 1.0), high


class HistoryIndex:
    """Every recorded payment within the retention, by transaction id, card and terminal."""

    def __init__(self) -> None:
        self.payments: dict[TransactionId, Known] = {}
        self.customers: dict[TransactionId, Timeline] = {}
        self.terminals: dict[TransactionId, Timeline] = {}

    def add(self, payment: Payment, fraud: bool | None = None) -> None:
        customer = self.customers.get(payment.customer_id)
        if customer is None:
            customer = self.customers[payment.customer_id] = Timeline(payment.customer_id)
        terminal = self.terminals.get(payment.terminal_id)
        if terminal is None:
            terminal = self.terminals[payment.terminal_id] = Timeline(payment.terminal_id)
        transaction_id, time_us = payment.transaction_id, payment.time_us
        self.payments[transaction_id] = Known(payment, customer, terminal, fraud)
        customer.insert(time_us, transaction_id, payment.amount, False)
        terminal.insert(time_us, transaction_id, payment.amount, bool(fraud))

    def remove(self, transaction_id: TransactionId) -> None:
        """Undo `add` (a batch whose write failed)."""
        known = self.payments.pop(transaction_id)
        known.customer.remove(known.time_us, transaction_id)
        known.terminal.remove(known.time_us, transaction_id)

    def set_label(self, transaction_id: TransactionId, fraud: bool) -> bool | None:
        """Record a label; the previous one (None: there was none). Raises KeyError for a
        payment not in the history."""
        known = self.payments[transaction_id]
        previous, known.fraud = known.fraud, fraud
        known.terminal.frauds[known.terminal.index_of(known.time_us, transaction_id)] = fraud
        return previous

    def windows(self, payment: Payment) -> Windows:
        """The payment's window features from what is recorded now (it included)."""
        t = payment.time_us
        customer = self.customers.get(payment.customer_id) or _NOBODY
        times, amounts = customer.times, customer.amounts
        end = before = customer.position(t, payment.transaction_id)
        if end < len(times) and customer.ids[end] == payment.transaction_id:
            end += 1  # the payment itself
        # From the shortest window out, each longer one adding only what lies before the
        # last: every amount is read once. (Bisections inline: this runs for every payment.)
        counts, averages = [], []
        total, summed_from = 0.0, end
        for days in WINDOWS_DAYS:
            start = bisect_right(times, t - days * DAY_US)
            total += sum(amounts[start:summed_from])
            summed_from = start
            count = end - start
            counts.append(count)
            averages.append(total / count if count else payment.amount)
        over_mean, high = _against_earlier_mean(customer, t, before, payment.amount)
        terminal = self.terminals.get(payment.terminal_id) or _NOBODY
        times, frauds = terminal.times, terminal.frauds
        near = bisect_right(times, t - TERMINAL_DELAY_DAYS * DAY_US)
        terminal_counts, risks = [], []
        far = near
        for days in WINDOWS_DAYS:
            far = bisect_right(times, t - (TERMINAL_DELAY_DAYS + days) * DAY_US)
            count = near - far
            terminal_counts.append(count)
            risks.append(frauds.count(1, far, near) / count if count else 0.0)
        # `far` is the longest window's: the terminal's known 30 days.
        first, last = frauds.find(1, far, near), frauds.rfind(1, far, near)
        recent = min(near - far, RECENT_KNOWN)
        return Windows(
            (counts[0], counts[1], counts[2]),
            (averages[0], averages[1], averages[2]),
            (terminal_counts[0], terminal_counts[1], terminal_counts[2]),
            (risks[0], risks[1], risks[2]),
            over_mean,
            high,
            (
                (t - times[first]) / DAY_US if first >= 0 else 0.0,
                (t - times[last]) / DAY_US if last >= 0 else 0.0,
            ),
            frauds.count(1, near - recent, near) / recent if recent else 0.0,
        )

    def drop_before(self, time_us: int) -> list[TransactionId]:
        """Forget payments older than `time_us`; which were forgotten."""
        old = [i for i, known in self.payments.items() if known.time_us < time_us]
        for transaction_id in old:
            del self.payments[transaction_id]
        for timelines in (self.customers, self.terminals):
            for entity in list(timelines):
                timeline = timelines[entity]
                timeline.drop_before(time_us)
                if not timeline.ids:
                    del timelines[entity]
        return old
