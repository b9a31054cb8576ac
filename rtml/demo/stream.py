"""A seeded synthetic card-transaction stream with fraud in it, for ``rtml demo``.

The world: ``n_cards`` cards, each with a spending profile (a typical amount, how
often it is used, how often online, a time zone and a handful of usual merchants), and
merchants with a popularity, a typical basket size and an age; some merchants are only
created while the stream runs. Legitimate traffic is single transactions plus short
shopping sessions (several quick transactions at usual merchants, so that quick
succession alone is not fraud) and the odd large purchase (so that a large amount
alone is not fraud either). Fraud comes in incidents on a compromised card:

- ``burst``: 4 to 15 transactions within a few minutes, mostly online, at larger
  amounts, half of them at new or recently created merchants;
- ``card_testing``: 2 to 5 tiny amounts at one (often new) merchant, then, a few
  minutes later, one or two large ones;
- ``unusual_amount``: one or two transactions at about ten times the card's usual
  amount, at merchants the card has not used.

Time is simulated (``events_per_second`` events per simulated second, starting at
:data:`START_TS`, 2026-01-01 00:00 UTC), so a long stream generates in well under a
second. Each event's label (fraud or not) becomes known later, at ``label_ts``:
fraud after a cardholder report (1 minute plus about 10 minutes on average), legitimate
transactions after 10 to 30 simulated minutes.

Examples
--------
>>> from rtml.demo.stream import make_stream
>>> s = make_stream(20_000, seed=3)
>>> len(s.events), bool((s.events.ts[1:] >= s.events.ts[:-1]).all())
(20000, True)
>>> bool(0.01 < s.events.is_fraud.mean() < 0.02)
True
>>> bool((make_stream(20_000, seed=3).events.amount == s.events.amount).all())
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

START_TS = 1_767_225_600.0
"""Simulated start of every stream: 2026-01-01 00:00:00 UTC, in seconds since the epoch."""

PATTERNS = ("legit", "burst", "card_testing", "unusual_amount")
"""Names of the values of :attr:`Events.pattern`."""

_TIME_ZONES = np.array([-8, -7, -6, -5, 0, 1, 2, 8, 9])
_TIME_ZONE_P = np.array([0.10, 0.05, 0.12, 0.18, 0.15, 0.20, 0.05, 0.08, 0.07])
# Relative card activity by local hour: quiet at night.
_DIURNAL = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, *[1.0] * 16, 0.7])
_USUAL_P = np.array([0.35, 0.25, 0.15, 0.10, 0.10, 0.05])  # a card's usual merchants, by rank
_EXPLORE = 0.10  # share of legitimate transactions at a merchant that is not a usual one
_BIG_PURCHASE = 0.005  # share of legitimate transactions at several times the usual amount
_SESSION_SHARE = 0.08  # share of legitimate transactions that belong to shopping sessions
_PATTERN_P = np.array([0.40, 0.30, 0.30])  # burst, card testing, unusual amount
_MEAN_INCIDENT = 0.40 * 9.5 + 0.30 * 5.0 + 0.30 * 1.5  # transactions per incident


@dataclass(frozen=True)
class Events:
    """Transactions in event-time order, one array element each.

    ``ts`` (float64 seconds since the epoch, non-decreasing), ``card_id`` and
    ``merchant_id`` (str), ``amount`` (float64), the request-time fields ``local_hour``
    (the card holder's hour of day, 0-23) and ``is_online`` (0/1), the truth:
    ``is_fraud`` (bool), ``pattern`` (index into :data:`PATTERNS`), ``incident``
    (fraud incident number, -1 for legitimate ones), and ``label_ts``, the simulated
    time the label becomes known (always after ``ts``).
    """

    ts: np.ndarray
    card_id: np.ndarray
    merchant_id: np.ndarray
    amount: np.ndarray
    local_hour: np.ndarray
    is_online: np.ndarray
    is_fraud: np.ndarray
    pattern: np.ndarray
    incident: np.ndarray
    label_ts: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class Profiles:
    """What is known about cards and merchants when the stream starts (a nightly batch).

    Cards: ``card_id`` with ``avg_amount_90d``, ``max_amount_90d``, ``n_txn_90d`` and
    ``card_age_days``. Merchants that exist at the start: ``merchant_id`` with
    ``merchant_age_days`` and ``merchant_n_txn_30d`` (merchants created during the
    stream are not in it). Card-merchant pairs used before: ``pair_key``
    (``"card|merchant"``) with ``pair_n_txn``.
    """

    card_id: np.ndarray
    avg_amount_90d: np.ndarray
    max_amount_90d: np.ndarray
    n_txn_90d: np.ndarray
    card_age_days: np.ndarray
    merchant_id: np.ndarray
    merchant_age_days: np.ndarray
    merchant_n_txn_30d: np.ndarray
    pair_key: np.ndarray
    pair_n_txn: np.ndarray


@dataclass(frozen=True)
class Stream:
    """A generated stream: its :class:`Events` and the :class:`Profiles` at its start."""

    events: Events
    profiles: Profiles
    seed: int
    start: float


@dataclass(frozen=True)
class _World:
    scale: np.ndarray  # a card's typical amount
    weight: np.ndarray  # probability that a legitimate transaction is the card's
    online: np.ndarray
    tz: np.ndarray
    age_days: np.ndarray
    activity: np.ndarray
    usual: np.ndarray  # [cards, 6] merchant indices
    popularity: np.ndarray  # over existing merchants, sums to 1
    basket: np.ndarray  # a merchant's amount factor (existing, then new merchants)
    merchant_age_days: np.ndarray  # existing merchants
    new_created: np.ndarray  # creation times of new merchants (sorted, relative seconds)
    recent: np.ndarray  # existing merchants created less than 30 days ago


def make_stream(
    n_events: int,
    *,
    seed: int = 7,
    n_cards: int = 20_000,
    n_merchants: int = 4_000,
    fraud_rate: float = 0.015,
    events_per_second: float = 35.0,
    start: float = START_TS,
) -> Stream:
    """Generates ``n_events`` transactions (about ``fraud_rate`` of them fraudulent).

    The same arguments always give the same stream. Simulated time advances by
    ``1 / events_per_second`` seconds per event on average (10,000 events span about
    5 simulated minutes at the default).
    """
    if n_events < 1 or n_cards < 1 or n_merchants < 1:
        raise ValueError("make_stream needs n_events, n_cards and n_merchants >= 1")
    rng = np.random.default_rng(seed)
    duration = n_events / events_per_second
    world = _make_world(rng, n_cards, n_merchants, max(20, n_events // 2000), duration)
    n_incidents = max(1, round(n_events * fraud_rate / _MEAN_INCIDENT))
    fraud = _fraud(rng, world, n_incidents, duration)
    n_legit = n_events - len(fraud["ts"])
    if n_legit < 0:
        raise ValueError(f"fraud_rate {fraud_rate} leaves no room for legitimate events")
    n_session = round(n_legit * _SESSION_SHARE)
    legit = [_legit_singles(rng, world, n_legit - n_session, duration)]
    legit.append(_legit_sessions(rng, world, n_session, duration))
    parts = [*legit, fraud]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in fraud}
    order = np.argsort(cols["ts"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    return Stream(_events(rng, world, cols, start), _profiles(rng, world), seed, start)


def _make_world(
    rng: np.random.Generator, n_cards: int, n_merchants: int, n_new: int, duration: float
) -> _World:
    tz = rng.choice(_TIME_ZONES, size=n_cards, p=_TIME_ZONE_P)
    activity = rng.gamma(2.0, 0.5, n_cards)
    weight = activity * _DIURNAL[tz % 24]
    popularity = rng.lognormal(0.0, 1.2, n_merchants)
    popularity /= popularity.sum()
    age = rng.uniform(30.0, 3000.0, n_merchants)
    recent_mask = rng.random(n_merchants) < 0.05
    age[recent_mask] = rng.uniform(1.0, 30.0, int(recent_mask.sum()))
    return _World(
        scale=rng.lognormal(np.log(35.0), 0.7, n_cards),
        weight=weight / weight.sum(),
        online=rng.beta(2.0, 5.0, n_cards),
        tz=tz,
        age_days=rng.uniform(30.0, 3650.0, n_cards),
        activity=activity,
        usual=rng.choice(n_merchants, size=(n_cards, len(_USUAL_P)), p=popularity),
        popularity=popularity,
        basket=rng.lognormal(0.0, 0.4, n_merchants + n_new),
        merchant_age_days=age,
        new_created=np.sort(rng.uniform(0.0, 0.9 * duration, n_new)),
        recent=np.flatnonzero(recent_mask),
    )


def _columns(
    ts: np.ndarray,
    card: np.ndarray,
    merchant: np.ndarray,
    amount: np.ndarray,
    online: np.ndarray,
    pattern: np.ndarray,
    incident: np.ndarray,
) -> dict[str, np.ndarray]:
    return {
        "ts": ts,
        "card": card.astype(np.int64),
        "merchant": merchant.astype(np.int64),
        "amount": np.maximum(np.round(amount, 2), 0.5),
        "online": online.astype(np.int8),
        "pattern": pattern.astype(np.int8),
        "incident": incident.astype(np.int32),
    }


def _legit(rng: np.random.Generator, w: _World, ts: np.ndarray, card: np.ndarray) -> dict:
    """Legitimate transactions of the given cards at the given (relative) times."""
    n = len(ts)
    merchant = w.usual[card, rng.choice(len(_USUAL_P), size=n, p=_USUAL_P)]
    explore = np.flatnonzero(rng.random(n) < _EXPLORE)
    merchant[explore] = rng.choice(len(w.popularity), size=len(explore), p=w.popularity)
    # Some exploring customers try a merchant created during the stream (if one exists yet).
    to_new = explore[rng.random(len(explore)) < 0.08]
    n_created = np.searchsorted(w.new_created, ts[to_new])
    has = n_created > 0
    pick = np.floor(rng.random(len(to_new)) * n_created).astype(np.int64)
    merchant[to_new[has]] = len(w.popularity) + pick[has]
    amount = w.scale[card] * w.basket[merchant] * rng.lognormal(0.0, 0.5, n)
    big = rng.random(n) < _BIG_PURCHASE  # a new phone, a flight: large but legitimate
    amount[big] *= rng.lognormal(np.log(6.0), 0.4, int(big.sum()))
    online = rng.random(n) < w.online[card]
    zeros = np.zeros(n)
    return _columns(ts, card, merchant, amount, online, zeros, zeros - 1)


def _legit_singles(rng: np.random.Generator, w: _World, n: int, duration: float) -> dict:
    ts = rng.uniform(0.0, duration, n)
    return _legit(rng, w, ts, rng.choice(len(w.weight), size=n, p=w.weight))


def _legit_sessions(rng: np.random.Generator, w: _World, n: int, duration: float) -> dict:
    """Shopping sessions: 2 to 5 transactions of one card about 45 s apart."""
    lengths = rng.integers(2, 6, size=n // 2 + 1)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), n)) + 1]
    lengths[-1] -= lengths.sum() - n
    lengths = lengths[lengths > 0]
    cards = rng.choice(len(w.weight), size=len(lengths), p=w.weight)
    return _legit(rng, w, _grouped_times(rng, lengths, 45.0, duration), np.repeat(cards, lengths))


def _grouped_times(
    rng: np.random.Generator, lengths: np.ndarray, mean_gap: float, duration: float
) -> np.ndarray:
    """Times of groups of events with exponential gaps, each group starting at a random
    time that lets it end within ``duration``."""
    gaps = rng.exponential(mean_gap, int(lengths.sum()))
    first = np.cumsum(lengths) - lengths
    gaps[first] = 0.0
    within = np.cumsum(gaps)
    within -= np.repeat(within[first], lengths)
    span = np.maximum.reduceat(within, first)
    starts = rng.random(len(lengths)) * np.maximum(duration - span, 0.0)
    return np.repeat(starts, lengths) + within


def _incident_offsets(rng: np.random.Generator, kind: int) -> tuple[np.ndarray, int]:
    """Times of an incident's transactions from its first one, and how many of them are
    tiny card tests."""
    if kind == 1:  # burst: 4 to 15 transactions about 12 s apart
        return np.cumsum(np.r_[0.0, rng.exponential(12.0, int(rng.integers(3, 15)))]), 0
    if kind == 2:  # card testing: tiny amounts 20 s apart, a pause, then 1 or 2 large ones
        n_tiny, n_big = int(rng.integers(2, 6)), int(rng.integers(1, 3))
        gaps = rng.exponential(20.0, n_tiny + n_big)
        gaps[0], gaps[n_tiny] = 0.0, 30.0 + rng.exponential(150.0)
        return np.cumsum(gaps), n_tiny
    return np.cumsum(np.r_[0.0, rng.exponential(90.0, int(rng.integers(0, 2)))]), 0


def _fraud(rng: np.random.Generator, w: _World, n_incidents: int, duration: float) -> dict:
    """Fraud incidents on random cards at random times (see the module docstring)."""
    n_cards, n_old = len(w.scale), len(w.popularity)

    def popular(m: int) -> np.ndarray:
        return rng.choice(n_old, size=m, p=w.popularity)

    def shady(t: float, m: int) -> np.ndarray:
        """Merchants fraud favours: created during the stream (before t) or recently."""
        n_created = int(np.searchsorted(w.new_created, t))
        out = w.recent[rng.integers(len(w.recent), size=m)] if len(w.recent) else popular(m)
        if n_created:
            new = rng.random(m) < 0.6
            out[new] = n_old + rng.integers(n_created, size=int(new.sum()))
        return out

    parts = []
    kinds = rng.choice(3, size=n_incidents, p=_PATTERN_P) + 1
    for k, kind in enumerate(kinds):
        card = int(rng.integers(n_cards))
        offsets, n_tiny = _incident_offsets(rng, int(kind))
        m = len(offsets)
        t = float(rng.uniform(0.0, max(duration - offsets[-1], 0.0)))
        scale = w.scale[card]
        if kind == 1:  # burst
            merchant = np.where(rng.random(m) < 0.5, shady(t, m), popular(m))
            amount = rng.lognormal(np.log(max(2.0 * scale, 60.0)), 0.5, m)
            online = rng.random(m) < 0.85
        elif kind == 2:  # card testing
            n_big = m - n_tiny
            merchant = np.r_[np.repeat(shady(t, 1), n_tiny), popular(n_big)]
            amount = np.r_[rng.uniform(0.5, 3.0, n_tiny), rng.lognormal(np.log(500.0), 0.5, n_big)]
            online = np.r_[np.ones(n_tiny, bool), rng.random(n_big) < 0.8]
        else:  # unusual amount
            merchant = np.where(rng.random(m) < 0.3, shady(t, m), popular(m))
            amount = scale * rng.lognormal(np.log(10.0), 0.4, m)
            online = rng.random(m) < 0.6
        ts = t + offsets
        cards = np.full(m, card)
        parts.append(_columns(ts, cards, merchant, amount, online, np.full(m, kind), np.full(m, k)))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _events(rng: np.random.Generator, w: _World, cols: dict, start: float) -> Events:
    n = len(cols["ts"])
    fraud = cols["pattern"] > 0
    delay = np.where(fraud, 60.0 + rng.exponential(600.0, n), rng.uniform(600.0, 1800.0, n))
    ts = start + cols["ts"]
    hour = np.floor(cols["ts"] / 3600.0 + w.tz[cols["card"]]) % 24
    return Events(
        ts=ts,
        card_id=_card_ids(len(w.scale))[cols["card"]],
        merchant_id=_merchant_ids(len(w.basket))[cols["merchant"]],
        amount=cols["amount"],
        local_hour=hour.astype(np.int8),
        is_online=cols["online"],
        is_fraud=fraud,
        pattern=cols["pattern"],
        incident=cols["incident"],
        label_ts=ts + delay,
    )


def _profiles(rng: np.random.Generator, w: _World) -> Profiles:
    n_cards, n_old = len(w.scale), len(w.popularity)
    basket = (w.basket[w.usual] * _USUAL_P).sum(axis=1)
    avg = w.scale * basket * np.exp(0.125) * rng.lognormal(0.0, 0.05, n_cards)
    n_txn = rng.poisson(w.activity * 135.0) + 1
    # Card-merchant pairs: a card's usual merchants, with how often it used them (a
    # merchant drawn twice for one card is one pair with both counts).
    counts = rng.poisson(_USUAL_P * n_txn[:, None]).ravel()
    code = np.repeat(np.arange(n_cards), len(_USUAL_P)) * n_old + w.usual.ravel()
    pairs, inverse = np.unique(code, return_inverse=True)
    pair_n = np.bincount(inverse, weights=counts).astype(np.int64)
    used = pair_n > 0
    card_ids, merchant_ids = _card_ids(n_cards), _merchant_ids(len(w.basket))
    pair_key = np.char.add(
        np.char.add(card_ids[pairs[used] // n_old], "|"), merchant_ids[pairs[used] % n_old]
    )
    daily = n_cards * 1.5 * (1.0 - _EXPLORE * 0.5)
    return Profiles(
        card_id=card_ids,
        avg_amount_90d=avg,
        max_amount_90d=avg * rng.lognormal(np.log(3.5), 0.25, n_cards),
        n_txn_90d=n_txn,
        card_age_days=w.age_days,
        merchant_id=merchant_ids[:n_old],
        merchant_age_days=w.merchant_age_days,
        merchant_n_txn_30d=rng.poisson(w.popularity * daily * 30.0),
        pair_key=pair_key,
        pair_n_txn=pair_n[used],
    )


def _card_ids(n: int) -> np.ndarray:
    return np.array([f"c{i:06d}" for i in range(n)])


def _merchant_ids(n: int) -> np.ndarray:
    return np.array([f"m{i:05d}" for i in range(n)])
