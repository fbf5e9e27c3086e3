"""Seeded synthetic SaaS customer base in the shape of the input contract (the five tables).

Every account carries a hidden *health* that drifts week by week (AR(1) around an account-level
mean, with occasional negative shocks such as a champion leaving). Health drives, with noise, all
observable behaviour: product usage, support requests, survey answers, plan changes and the churn
decision at each monthly renewal. A model can therefore learn churn from the tables, but not
perfectly. Everything is a function of one ``numpy`` Generator seeded by ``seed``, so the same
arguments always give identical frames.

Simulation is a loop over days (vectorised over accounts); usage is drawn afterwards per account
from the simulated daily health and subscription state (vectorised over days x users).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import TABLES, Tables, TableSpec, validate_tables
from features.io import atomic_dir

PLANS = ("starter", "growth", "enterprise")
PLAN_SHARES = (0.55, 0.35, 0.10)
SEGMENTS = ("SMB", "MidMarket", "Enterprise")  # by plan index
#: The CSMs holding the accounts of each plan (the accounts table's ``owner``).
OWNERS = (("Ana Ruiz", "Ben Okafor", "Chloe Martin"), ("Dev Patel", "Emma Larsen"),
          ("Femi Adeyemi",))
SEAT_RANGES = ((3, 10), (10, 40), (40, 200))  # inclusive, by plan index
PRICE_PER_SEAT = (12.0, 25.0, 45.0)
PLATFORM_FEE = (0.0, 0.0, 1500.0)
INDUSTRIES = ("software", "financial_services", "healthcare", "retail", "manufacturing",
              "education")
#: Small industry effect on the long-run health mean, so industry is weakly informative.
INDUSTRY_HEALTH = (0.15, 0.05, -0.05, -0.2, 0.0, -0.1)

#: Product feature catalogue: (event name, base daily use logit, mean extra quantity per use).
EVENT_CATALOGUE = (
    ("dashboard_view", 1.0, 4.0),
    ("report_view", -1.0, 2.0),
    ("search", -1.2, 3.0),
    ("report_export", -2.2, 1.0),
    ("api_call", -2.5, 40.0),
    ("integration_sync", -2.4, 6.0),
    ("workflow_run", -2.6, 3.0),
    ("alert_create", -3.4, 0.5),
    ("comment_add", -2.2, 1.5),
    ("file_upload", -3.0, 1.0),
    ("user_invite", -4.6, 0.2),
    ("settings_update", -4.2, 0.3),
)
EVENTS = tuple(name for name, _, _ in EVENT_CATALOGUE)

# Health dynamics (weekly AR(1)); stationary sd of the fluctuation ~ 0.25 / sqrt(1 - 0.92^2) ~ 0.64.
HEALTH_PHI = 0.92
HEALTH_SIGMA = 0.25
SHOCK_WEEKLY_P = 0.004  # ~20 % of accounts a year lose a champion or similar
#: Churn at renewal: sigmoid(CHURN_A - CHURN_B[plan] * smoothed health + plan/tenure terms).
#: The interactions are what CS teams see in practice and what a linear score misses:
#: cheap plans leave on a bad month, enterprise contracts tolerate it; new accounts that fail
#: onboarding leave fast; unhappy accounts nobody has called in months leave too.
CHURN_A = -4.6
CHURN_B = (2.6, 1.8, 0.9)
CHURN_PLAN = (0.3, 0.0, -0.8)
CHURN_EARLY_TENURE = 2.2  # extra logit in the first 4 months when onboarding is failing
CHURN_NEGLECT = 1.2  # extra logit: unhappy and no proactive contact for 90 days
#: Annual contracts decide once a year, so each decision weighs a year of reasons.
CHURN_ANNUAL = 2.0
#: Days before a renewal that the customer decides (indexed by billing period in months).
DECISION_LEAD = np.zeros(13, dtype=np.int64)
DECISION_LEAD[1], DECISION_LEAD[12] = 14, 60
#: Share of leavers who stop using the product before their contract ends.
GHOSTING_P = 0.6
#: Share of accounts on annual contracts, by plan (the rest renew monthly).
ANNUAL_SHARE = (0.0, 0.5, 1.0)
WINBACK_P = 0.10
#: Health boost of a proactive contact; it decays with the AR(1), so steady effect is small.
PROACTIVE_BOOST = 0.05
QBR_BOOST = 0.10

#: (day indices, seconds of day) -> epoch nanoseconds.
Stamper = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _add_months(dates: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``dates`` (datetime64[D]) plus ``k`` months, clipping the day to the month's length."""
    months = dates.astype("datetime64[M]")
    day = (dates - months.astype("datetime64[D]")).astype(np.int64)
    target = months + np.asarray(k, dtype=np.int64)
    length = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(
        np.int64)
    return target.astype("datetime64[D]") + np.minimum(day, length - 1)


def _seconds_of_day(rng: np.random.Generator, n: int, mean_hour: float, sd_hour: float
                    ) -> np.ndarray:
    """Times of day (seconds) clustered around office hours, always inside the day."""
    hours = np.clip(rng.normal(mean_hour, sd_hour, n), 0.0, 23.999)
    return (hours * 3600).astype(np.int64)


def generate(accounts: int = 3000, months: int = 24, seed: int = 7,
             start: str = "2024-01-01") -> Tables:
    """A synthetic customer base of ``accounts`` accounts over ``months`` months from ``start``.

    All timestamps fall before ``start + months``; the returned tables pass
    :func:`features.contract.validate_tables`.
    """
    if accounts < 1 or months < 1:
        raise ValueError("accounts and months must be at least 1")
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start).normalize()
    t_end = t0 + pd.DateOffset(months=months)
    start_d = np.datetime64(t0.date(), "D")
    n_days = int((t_end - t0).days)
    n = accounts
    # Day of week of each simulated day (Mon = 0); 1970-01-01 was a Thursday.
    dow = (start_d.astype(np.int64) + 3 + np.arange(n_days)) % 7
    weekday = dow < 5

    # ---- accounts -------------------------------------------------------------------------------
    plan = rng.choice(3, size=n, p=PLAN_SHARES)
    low = np.array([r[0] for r in SEAT_RANGES])[plan]
    high = np.array([r[1] for r in SEAT_RANGES])[plan]
    # Log-uniform seats: most accounts sit at the small end of their plan's range.
    seats0 = np.clip(np.floor(np.exp(rng.uniform(np.log(low), np.log(high + 1)))), low, high
                     ).astype(np.int64)
    industry = rng.integers(0, len(INDUSTRIES), n)
    term = np.where(rng.random(n) < np.array(ANNUAL_SHARE)[plan], 12, 1)  # billing period, months
    existing = rng.random(n) < 0.6
    signup_day = np.where(existing, -rng.integers(1, 731, n), rng.integers(0, n_days, n))
    discount = rng.uniform(0.8, 1.0, n)  # negotiated price level, fixed per account

    # Long-run health mean. Accounts that already exist at start survived so far: slightly healthier.
    mu = (rng.normal(0.0, 0.8, n) + np.array([0.0, 0.1, 0.3])[plan]
          + np.array(INDUSTRY_HEALTH)[industry] + 0.2 * existing)
    stationary_sd = HEALTH_SIGMA / np.sqrt(1 - HEALTH_PHI**2)
    h = mu + rng.normal(0.0, stationary_sd, n)
    h_ema = h.copy()
    mu0 = mu.copy()

    # ---- simulation state -------------------------------------------------------------------------
    cur_plan = plan.copy()
    cur_seats = seats0.copy()
    active = np.zeros(n, dtype=bool)
    anchor = start_d + signup_day  # renewal anniversaries count from the spell's first day
    renew_k = np.zeros(n, dtype=np.int64)
    next_renewal = np.full(n, -10**9, dtype=np.int64)
    return_day = np.full(n, -1, dtype=np.int64)
    open_row = np.full(n, -1, dtype=np.int64)
    sub_acc: list[int] = []
    sub_start: list[int] = []
    sub_end: list[int] = []
    sub_mrr: list[float] = []
    sub_term: list[int] = []

    def mrr_of(a: np.ndarray) -> np.ndarray:
        p = cur_plan[a]
        raw = (cur_seats[a] * np.array(PRICE_PER_SEAT)[p] + np.array(PLATFORM_FEE)[p]) * discount[a]
        return np.round(raw, 2)

    def open_spells(a: np.ndarray, day: int) -> None:
        for acc, m in zip(a.tolist(), mrr_of(a).tolist(), strict=True):
            open_row[acc] = len(sub_acc)
            sub_acc.append(acc)
            sub_start.append(day if day >= 0 else int(signup_day[acc]))
            sub_end.append(-1)
            sub_mrr.append(m)
            sub_term.append(int(term[acc]))

    def schedule_renewal(a: np.ndarray) -> None:
        next_renewal[a] = (_add_months(anchor[a], renew_k[a] * term[a]) - start_d).astype(np.int64)

    # Accounts already customers at start: one open spell from signup, next anniversary >= start.
    pre = np.flatnonzero(existing)
    active[pre] = True
    open_spells(pre, -1)
    renew_k[pre] = (start_d.astype("datetime64[M]") - anchor[pre].astype("datetime64[M]")).astype(
        np.int64) // term[pre]
    schedule_renewal(pre)
    late = pre[next_renewal[pre] < 0]
    renew_k[late] += 1
    schedule_renewal(late)

    # Proactive cadence: roughly monthly check-ins for growth/enterprise, rarer for starter;
    # a fifth of accounts are neglected (their CSM is overloaded), with four times longer gaps.
    cadence = np.array([75.0, 30.0, 30.0])[plan] * np.where(rng.random(n) < 0.2, 4.0, 1.0)
    next_touch = np.where(existing, rng.uniform(0, cadence), signup_day + 14).astype(np.int64)
    next_qbr = np.where(plan == 2, np.where(existing, rng.integers(0, 91, n), signup_day + 45),
                        10**9)
    # NPS: 7 days after signup, then about every 180 days (a random phase for older accounts).
    next_nps = np.where(existing, rng.integers(0, 180, n), signup_day + 7 + rng.integers(0, 3, n))
    tenure_start = signup_day.copy()
    last_touch = signup_day.copy()  # the kick-off call counts as contact
    decided = np.zeros(n, dtype=bool)  # this renewal's decision is made
    leaving = np.zeros(n, dtype=bool)  # ... and it is to leave

    H = np.zeros((n, n_days), dtype=np.float32)  # daily health (constant within a week)
    A = np.zeros((n, n_days), dtype=bool)  # subscribed that day
    S = np.zeros((n, n_days), dtype=np.int16)  # seats that day
    touch_parts: list[tuple[np.ndarray, int, np.ndarray]] = []  # (accounts, day, kind code)
    ticket_parts: list[tuple[np.ndarray, int]] = []
    nps_parts: list[tuple[np.ndarray, int]] = []
    ticket_scale = 0.025 * np.sqrt(seats0 / 10.0)

    def churn_logit(a: np.ndarray, d: int) -> np.ndarray:
        """Log-odds that accounts ``a`` leave at a renewal decided on day ``d``."""
        early = (d - tenure_start[a]) < 122
        hr = h_ema[a]
        failing = _sigmoid(-4.0 * (hr + 0.3))  # a soft threshold, not a line
        neglected = (d - last_touch[a]) > 90
        return (CHURN_A - np.array(CHURN_B)[cur_plan[a]] * hr
                + np.array(CHURN_PLAN)[cur_plan[a]]
                + CHURN_EARLY_TENURE * early * failing
                + CHURN_NEGLECT * neglected * (hr < -0.5)
                + CHURN_ANNUAL * (term[a] == 12))

    for d in range(n_days):
        # Arrivals: new signups and win-backs open a spell today.
        arrive = np.flatnonzero((signup_day == d) | (~active & (return_day == d)))
        if arrive.size:
            back = arrive[return_day[arrive] == d]
            # A win-back starts afresh: the reasons to leave were addressed, at least for a while.
            h[back] = mu[back] + 0.3 + rng.normal(0.0, 0.3, back.size)
            h_ema[back] = h[back]
            mu[back] = np.maximum(mu[back], mu0[back])  # a fresh start with new people
            active[arrive] = True
            anchor[arrive] = start_d + d
            renew_k[arrive] = 1
            schedule_renewal(arrive)
            open_spells(arrive, d)
            return_day[arrive] = -1

        if d % 7 == 0:
            shock = rng.random(n) < SHOCK_WEEKLY_P
            h = mu + HEALTH_PHI * (h - mu) + rng.normal(0.0, HEALTH_SIGMA, n)
            h[shock] -= rng.uniform(1.0, 2.0, shock.sum())
            mu[shock] -= 0.4  # part of the damage is lasting (the new contact is less engaged)

        # Customers decide before the contract ends: annual ones about two months ahead, monthly
        # ones about two weeks. Most of those leaving stop using the product (they are moving to
        # something else) while the subscription runs out: the "silent churn" CS teams dread.
        deciding = np.flatnonzero(active & ~decided & (next_renewal - DECISION_LEAD[term] == d))
        if deciding.size:
            decided[deciding] = True
            leave = deciding[rng.random(deciding.size) < _sigmoid(churn_logit(deciding, d))]
            leaving[leave] = True
            ghost = leave[rng.random(leave.size) < GHOSTING_P]
            drop = rng.uniform(1.5, 3.0, ghost.size)
            h[ghost] -= drop
            mu[ghost] -= drop  # no recovery: the decision is made

        # Renewals first: a churned account's end_date is exclusive, nothing happens on it.
        renew = np.flatnonzero(active & (next_renewal == d))
        if renew.size:
            # Those who decided ahead act on it; the rest (e.g. a contract signed days ago) decide now.
            now = ~decided[renew]
            churn = leaving[renew].copy()
            churn[now] = rng.random(now.sum()) < _sigmoid(churn_logit(renew[now], d))
            decided[renew] = False
            leaving[renew] = False
            gone = renew[churn]
            for acc in gone.tolist():
                sub_end[open_row[acc]] = d
            active[gone] = False
            comes_back = rng.random(gone.size) < WINBACK_P
            return_day[gone[comes_back]] = d + rng.integers(60, 201, comes_back.sum())

            stay = renew[~churn]
            u = rng.random(stay.size)
            hs = h_ema[stay]
            up = (u < 0.02 * _sigmoid(2.0 * (hs - 0.5))) & (cur_plan[stay] < 2)
            down = (u > 1 - 0.03 * _sigmoid(-2.0 * (hs + 0.8))) & (cur_plan[stay] > 0)
            for mask, step in ((up, 1), (down, -1)):
                acc = stay[mask]
                if not acc.size:
                    continue
                cur_plan[acc] += step
                term[acc[cur_plan[acc] == 2]] = 12  # enterprise contracts are annual
                # The new contract starts today: renewals count from here.
                anchor[acc] = start_d + d
                renew_k[acc] = 0
                lo = np.array([r[0] for r in SEAT_RANGES])[cur_plan[acc]]
                hi = np.array([r[1] for r in SEAT_RANGES])[cur_plan[acc]]
                grown = cur_seats[acc] * (rng.uniform(1.2, 1.6, acc.size) if step > 0 else 0.7)
                cur_seats[acc] = np.clip(np.round(grown), lo, hi).astype(np.int64)
                for a in acc.tolist():
                    sub_end[open_row[a]] = d
                open_spells(acc, d)  # contiguous: the new row starts where the old one ends
            renew_k[renew] += 1
            schedule_renewal(renew)

        if weekday[d]:
            due = np.flatnonzero(active & (d >= next_touch))
            if due.size:
                touch_parts.append((due, d, np.zeros(due.size, dtype=np.int8)))
                h[due] += PROACTIVE_BOOST
                last_touch[due] = d
                next_touch[due] = d + np.maximum(
                    7, rng.gamma(4.0, cadence[due] / 4.0)).astype(np.int64)
            qbr = np.flatnonzero(active & (d >= next_qbr))
            if qbr.size:
                touch_parts.append((qbr, d, np.ones(qbr.size, dtype=np.int8)))
                h[qbr] += QBR_BOOST
                next_qbr[qbr] = d + 91 + rng.integers(-7, 8, qbr.size)

        # Support requests: more of them, the less healthy the account.
        lam = ticket_scale * np.exp(-0.7 * h) * (1.0 if weekday[d] else 0.25)
        k = rng.poisson(lam) * active
        if k.any():
            ticket_parts.append((np.repeat(np.arange(n), k), d))

        nps_due = d >= next_nps
        if nps_due.any():
            send = np.flatnonzero(nps_due & active)
            if send.size:
                nps_parts.append((send, d))
            idx = np.flatnonzero(nps_due)
            next_nps[idx] += 180 + rng.integers(-10, 11, idx.size)

        h_ema += (h - h_ema) / 14.0  # churn reacts to the last few weeks, not one bad day

        H[:, d] = h
        A[:, d] = active
        S[:, d] = cur_seats

    account_ids = np.array([f"A{i + 1:05d}" for i in range(n)], dtype=object)
    day_ns = np.int64(86_400 * 10**9)
    base_ns = np.int64(t0.value)
    end_ns = np.int64(t_end.value)

    def ts(days: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        return (base_ns + days.astype(np.int64) * day_ns + seconds.astype(np.int64) * 10**9)

    accounts_df = pd.DataFrame({
        "account_id": account_ids,
        "plan": np.array(PLANS, dtype=object)[plan],
        # Signup-time plan and seats: later changes show in subscriptions (and would leak the
        # future into point-in-time features if this snapshot held the current values).
        "seats": seats0,
        "industry": np.array(INDUSTRIES, dtype=object)[industry],
        "segment": np.array(SEGMENTS, dtype=object)[plan],
        "signup_date": pd.to_datetime(start_d + signup_day),
        "owner": _owners(seed, plan),
    })

    sub_end_arr = np.array(sub_end, dtype=np.int64)
    subs_df = pd.DataFrame({
        "account_id": account_ids[np.array(sub_acc, dtype=np.int64)],
        "start_date": pd.to_datetime(start_d + np.array(sub_start, dtype=np.int64)),
        "end_date": pd.to_datetime(np.where(sub_end_arr >= 0, start_d + sub_end_arr,
                                            np.datetime64("NaT", "D"))),
        "mrr": np.array(sub_mrr, dtype=np.float64),
        "billing_period_months": np.array(sub_term, dtype=np.int64),
    }).sort_values(["account_id", "start_date"], kind="stable").reset_index(drop=True)

    touch_df, csat_parts = _touchpoints(rng, touch_parts, ticket_parts, H, account_ids, ts, end_ns)
    surveys_df = _surveys(rng, nps_parts, csat_parts, H, account_ids, ts, end_ns)
    usage_df = _usage(rng, H, A, S, weekday, account_ids, ts)

    return validate_tables(Tables(accounts=accounts_df, subscriptions=subs_df,
                                  usage_events=usage_df, touchpoints=touch_df, surveys=surveys_df,
                                  source="<synthetic>"))


def _owners(seed: int, plan: np.ndarray) -> np.ndarray:
    """The CSM of each account: a book of accounts per CSM team, by plan. Drawn from a stream of
    its own, so the rest of the data is what the seed gave before owners existed."""
    pick = np.random.default_rng([seed, 1]).random(plan.size)
    return np.array([OWNERS[p][int(u * len(OWNERS[p]))] for p, u in zip(plan.tolist(),
                     pick.tolist(), strict=True)], dtype=object)


def _touchpoints(rng: np.random.Generator, touch_parts: list, ticket_parts: list, H: np.ndarray,
                 account_ids: np.ndarray, ts: Stamper, end_ns: np.int64
                 ) -> tuple[pd.DataFrame, tuple[np.ndarray, ...]]:
    """Proactive contacts and support requests; also returns resolved requests for CSAT."""
    # Proactive: check-ins by call or email, QBRs as meetings. resolved_at only applies to requests.
    p_acc = np.concatenate([p[0] for p in touch_parts] or [np.zeros(0, np.int64)])
    p_day = np.concatenate([np.full(p[0].size, p[1]) for p in touch_parts] or [np.zeros(0, int)])
    p_qbr = np.concatenate([p[2] for p in touch_parts] or [np.zeros(0, np.int8)]).astype(bool)
    p_channel = np.where(p_qbr, "meeting", np.where(rng.random(p_acc.size) < 0.4, "call", "email"))
    p_ts = ts(p_day, _seconds_of_day(rng, p_acc.size, 11.5, 2.0))

    r_acc = np.concatenate([p[0] for p in ticket_parts] or [np.zeros(0, np.int64)])
    r_day = np.concatenate([np.full(p[0].size, p[1]) for p in ticket_parts] or [np.zeros(0, int)])
    r_h = H[r_acc, r_day].astype(np.float64)
    is_chat = rng.random(r_acc.size) < 0.4
    r_ts = ts(r_day, _seconds_of_day(rng, r_acc.size, 13.0, 3.5))
    # Resolution time: chats take minutes to an hour, tickets about a day; unhealthy accounts bring
    # harder problems, so theirs take longer.
    median_h = np.where(is_chat, 0.6, 18.0) * np.exp(-0.35 * r_h)
    hours = median_h * np.exp(rng.normal(0.0, np.where(is_chat, 0.8, 1.0)))
    r_resolved = r_ts + np.ceil(hours * 3600).astype(np.int64) * 10**9
    # A few are dropped; those resolving after the data ends are still open at the end.
    unresolved = (rng.random(r_acc.size) < 0.03) | (r_resolved >= end_ns)
    r_resolved = np.where(unresolved, np.iinfo(np.int64).min, r_resolved)  # NaT

    frame = pd.DataFrame({
        "account_id": account_ids[np.concatenate([p_acc, r_acc])],
        "timestamp": pd.to_datetime(np.concatenate([p_ts, r_ts]).astype("datetime64[ns]")),
        "channel": np.concatenate([p_channel.astype(object),
                                   np.where(is_chat, "chat", "ticket").astype(object)]),
        "initiated_by": np.array(["company"] * p_acc.size + ["customer"] * r_acc.size,
                                 dtype=object),
        "resolved_at": pd.to_datetime(np.concatenate(
            [np.full(p_acc.size, np.iinfo(np.int64).min), r_resolved]).astype("datetime64[ns]")),
    }).sort_values(["account_id", "timestamp"], kind="stable").reset_index(drop=True)
    ok = ~unresolved
    csat = (r_acc[ok], r_resolved[ok], r_h[ok], hours[ok])
    return frame, csat


def _surveys(rng: np.random.Generator, nps_parts: list, csat_parts: tuple[np.ndarray, ...],
             H: np.ndarray, account_ids: np.ndarray, ts: Stamper, end_ns: np.int64
             ) -> pd.DataFrame:
    """NPS (about twice a year) and CSAT after resolved requests; empty score = not answered."""
    n_acc = np.concatenate([p[0] for p in nps_parts] or [np.zeros(0, np.int64)])
    n_day = np.concatenate([np.full(p[0].size, p[1]) for p in nps_parts] or [np.zeros(0, int)])
    n_h = H[n_acc, n_day].astype(np.float64)
    n_ts = ts(n_day, _seconds_of_day(rng, n_acc.size, 10.0, 1.5))
    answered = rng.random(n_acc.size) < 0.35 + 0.25 * _sigmoid(1.2 * n_h)
    n_score = np.clip(np.round(7.8 + 1.5 * n_h + rng.normal(0.0, 1.6, n_acc.size)), 0, 10) + 0.0

    c_acc, c_resolved, c_h, c_hours = csat_parts
    sent = rng.random(c_acc.size) < 0.8
    c_ts = c_resolved + rng.integers(5 * 60, 3 * 3600, c_acc.size) * 10**9
    sent &= c_ts < end_ns
    c_acc, c_ts, c_h, c_hours = c_acc[sent], c_ts[sent], c_h[sent], c_hours[sent]
    c_answered = rng.random(c_acc.size) < 0.35
    c_score = np.clip(np.round(4.0 + 0.5 * c_h - 0.35 * np.log1p(c_hours / 24.0)
                               + rng.normal(0.0, 0.8, c_acc.size)), 1, 5)

    frame = pd.DataFrame({
        "account_id": account_ids[np.concatenate([n_acc, c_acc])],
        "timestamp": pd.to_datetime(np.concatenate([n_ts, c_ts]).astype("datetime64[ns]")),
        "kind": np.array(["nps"] * n_acc.size + ["csat"] * c_acc.size, dtype=object),
        "score": np.concatenate([np.where(answered, n_score, np.nan),
                                 np.where(c_answered, c_score, np.nan)]),
    })
    # Round to the second like the other timestamps; the key must stay unique.
    frame["timestamp"] = frame["timestamp"].dt.floor("s")
    frame = frame.drop_duplicates(["account_id", "timestamp", "kind"])
    return frame.sort_values(["account_id", "timestamp"], kind="stable").reset_index(drop=True)


def _usage(rng: np.random.Generator, H: np.ndarray, A: np.ndarray, S: np.ndarray,
           weekday: np.ndarray, account_ids: np.ndarray, ts: Stamper) -> pd.DataFrame:
    """One row per (account, day, user, event) while subscribed, driven by daily health."""
    n, n_days = H.shape
    base_logit = np.array([b for _, b, _ in EVENT_CATALOGUE])
    extra_qty = np.array([q for _, _, q in EVENT_CATALOGUE])
    weekend_offset = np.where(weekday, 0.0, -2.0)
    parts_acc, parts_day, parts_user, parts_event, parts_qty = [], [], [], [], []
    user_labels: list[np.ndarray] = []
    user_offset = 0
    for a in range(n):
        days = np.flatnonzero(A[a])
        n_users = int(S[a].max()) if days.size else 0
        labels = np.array([f"{account_ids[a]}-u{u + 1}" for u in range(n_users)], dtype=object)
        user_labels.append(labels)
        offset, user_offset = user_offset, user_offset + n_users
        if not days.size:
            continue
        h = H[a, days].astype(np.float64)
        # Per-user engagement (power users vs occasional ones) and a shared day-level factor.
        user_z = rng.normal(0.0, 1.0, n_users)
        day_z = rng.normal(0.0, 0.5, days.size)
        # Users of small accounts each use the product more often than those of large ones.
        size = 0.5 * np.log(20.0 / max(n_users, 1))
        logit = (-3.35 + size + 1.1 * h + day_z + weekend_offset[days])[:, None] + user_z[None, :]
        on = rng.random((days.size, n_users)) < _sigmoid(logit)
        on &= np.arange(n_users)[None, :] < S[a, days][:, None]  # only seats licensed that day
        di, ui = np.nonzero(on)
        if not di.size:
            continue
        # Depth: healthier accounts use more of the catalogue; each account has its own favourites.
        affinity = base_logit + rng.normal(0.0, 0.7, base_logit.size)
        f_logit = affinity[None, :] + (0.6 * h[di])[:, None] + (0.3 * user_z[ui])[:, None]
        use = rng.random((di.size, base_logit.size)) < _sigmoid(f_logit)
        use[~use.any(axis=1), int(np.argmax(affinity))] = True  # an active user did something
        ri, fi = np.nonzero(use)
        qty = 1 + rng.poisson(extra_qty[fi] * np.exp(0.3 * h[di[ri]]))
        parts_acc.append(np.full(ri.size, a, dtype=np.int32))
        parts_day.append(days[di[ri]].astype(np.int32))
        parts_user.append((offset + ui[ri]).astype(np.int32))
        parts_event.append(fi.astype(np.int8))
        parts_qty.append(qty)
    if not parts_acc:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
            ("account_id", object), ("timestamp", "datetime64[ns]"), ("event", object),
            ("user_id", object), ("quantity", np.int64))})
    acc = np.concatenate(parts_acc)
    day = np.concatenate(parts_day)
    stamp = ts(day, _seconds_of_day(rng, acc.size, 13.0, 3.0))
    order = np.lexsort((stamp, acc))
    all_users = np.concatenate(user_labels)
    return pd.DataFrame({
        "account_id": account_ids[acc[order]],
        "timestamp": pd.to_datetime(stamp[order].astype("datetime64[ns]")),
        "event": np.array(EVENTS, dtype=object)[np.concatenate(parts_event)[order]],
        "user_id": all_users[np.concatenate(parts_user)[order]],
        "quantity": np.concatenate(parts_qty)[order].astype(np.int64),
    })


def write_tables(tables: Tables, out_dir: str | Path, fmt: str = "parquet",
                 overwrite: bool = False) -> Path:
    """Write one ``<table>.parquet`` (or ``.csv``) file per present table into ``out_dir``.

    The directory appears complete or not at all. CSV dates are ISO 8601 strings, nulls empty.

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty and ``overwrite`` is false.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"unknown format {fmt!r}; expected parquet or csv")
    out = Path(out_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for spec in TABLES:
            frame = tables.get(spec.name)
            if frame is None:
                continue
            if fmt == "parquet":
                frame.to_parquet(tmp / f"{spec.name}.parquet", index=False)
            else:
                _to_csv_frame(frame, spec).to_csv(tmp / f"{spec.name}.csv", index=False)
    return out


def _to_csv_frame(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """A copy with dates as ISO strings and whole-number floats as integers (nulls stay empty)."""
    out = frame.copy()
    kinds = {c.name: c.kind for c in spec.columns}
    for name in out.columns:
        col = out[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            values = col.to_numpy(dtype="datetime64[us]")
            if kinds.get(name) == "date":
                text = np.datetime_as_string(values, unit="D")
            else:
                # Keep sub-second parts only when there are any, for short but lossless output.
                frac = values.astype(np.int64) % 1_000_000 != 0
                unit = "us" if bool((frac & ~np.isnat(values)).any()) else "s"
                text = np.datetime_as_string(values, unit=unit)
            out[name] = np.where(np.isnat(values), "", text).astype(object)
        elif pd.api.types.is_float_dtype(col):
            finite = col.dropna()
            if len(finite) and bool((finite == finite.round()).all()) and finite.abs().max() < 2**53:
                out[name] = col.astype("Int64")
    return out
