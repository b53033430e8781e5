"""`careloop bench offers`: a simulated year of offers for many customers whose true response is known.

Each customer has a known propensity (low, middle, high) and either consents to marketing e-mail or not. Over the
year each gets, on random days, the chance of a trade-in, consumables, extended-warranty and cleaning offer, and
their birthday coupon; every one goes through the real offers service (eligibility, the random holdout, the
contact policy, the outbox) and out over SMTP to a real server in this process. A customer then converts with a
known probability: p0 of their propensity when held out or never reached, p1 when the offer reached them; an
offered converter redeems the coupon, a held-out one simply buys. The true uplift of a template is the mean of
(p1 - p0) over everyone it was meant for (0 for those it could not reach: intention to treat, as the report
measures). The bench prints the report and whether each template's true uplift lies within its interval.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from bench.fixtures import temporary_database
from careloop.db import Connection, Database
from careloop.runtime import resolve_services
from careloop.settings import get_settings
from customers import service as customers_service
from customers.models import ConsentChange, CustomerCreate
from devices import service as devices_service
from devices.models import DeviceCreate
from offers import service
from offers.delivery import Transports, deliver_due
from offers.models import Redemption, TemplateCreate

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ZONES = ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC", "Australia/Sydney"]
MODELS = ["RH-900", "OV-700", "DW-450", "WH-80", "AC-350"]
PROPENSITY = ("low", "middle", "high")
PROPENSITY_WEIGHTS = (0.5, 0.35, 0.15)
HOLDOUT = Decimal("0.2")
# per template: the spend source that counts, the chance a customer gets it in the year, and the true
# conversion probability without (p0) and with (p1) the offer, per propensity
TRUTH: dict[str, dict] = {
    "trade-in": {"source": "purchase", "yearly": 0.35, "amount": 4000,
                 "p0": (0.01, 0.03, 0.06), "p1": (0.03, 0.08, 0.14)},
    "consumables": {"source": "consumables", "yearly": 0.6, "amount": 120,
                    "p0": (0.05, 0.10, 0.20), "p1": (0.09, 0.18, 0.30)},
    "extended-warranty": {"source": "warranty", "yearly": 0.35, "amount": 600,
                          "p0": (0.01, 0.02, 0.04), "p1": (0.02, 0.05, 0.09)},
    "member-cleaning": {"source": "service_visit", "yearly": 0.5, "amount": 150,
                        "p0": (0.10, 0.20, 0.30), "p1": (0.25, 0.40, 0.55)},
    "birthday-coupon": {"source": "birthday_purchase", "yearly": 1.0, "amount": 300,
                        "p0": (0.05, 0.10, 0.15), "p1": (0.10, 0.18, 0.25)},
}


@dataclass
class SimCustomer:
    id: int
    propensity: int
    consents: bool
    devices: list[tuple[str, str]]  # (id, kind)


@dataclass
class Tally:
    assignments: int = 0
    true_uplift: float = 0.0  # summed; divided by assignments at the end
    conversions: dict[str, int] = field(default_factory=lambda: {"treated": 0, "holdout": 0})


def bench_offers(args: argparse.Namespace) -> int:
    from aiosmtpd.controller import Controller

    urls = resolve_services(get_settings(), need_broker=False)
    rng = random.Random(args.seed)
    print(f"careloop bench offers: {args.customers:,} customers, {args.days} simulated days, holdout "
          f"{HOLDOUT:.0%}, seed {args.seed}")
    mailbox = _Mailbox()
    port = _free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    started = time.perf_counter()
    try:
        with temporary_database(urls.database_url) as database_url:
            database = Database(database_url, max_connections=2)
            transports = Transports(smtp_url=f"smtp://127.0.0.1:{port}", mail_from="CareLoop <offers@bench.test>")
            try:
                with database.transaction() as conn:
                    customers = _customers(conn, args.customers, rng)
                    _templates(conn)
                print(f"  {len(customers):,} customers with {sum(len(c.devices) for c in customers):,} appliances "
                      f"({time.perf_counter() - started:.0f} s)")
                tallies = _simulate(database, transports, customers, args.days, rng)
                with database.transaction() as conn:
                    by_template = service.offers_report(conn, group_by="template")
                    by_segment = service.offers_report(conn, group_by="segment")
            finally:
                transports.close()
                database.close()
    finally:
        smtp.stop()
    _print(by_template, by_segment, tallies, mailbox, time.perf_counter() - started)
    return 0


class _Mailbox:
    def __init__(self) -> None:
        self.received = 0
        self.message_ids: set[str] = set()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.received += 1
        for line in envelope.content.split(b"\n", 20):
            if line.lower().startswith(b"message-id:"):
                self.message_ids.add(line.split(b":", 1)[1].strip().decode())
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _customers(conn: Connection, count: int, rng: random.Random) -> list[SimCustomer]:
    """Customers through the customers service (their consents kept in the history), each with one to three
    appliances of random models and ages."""
    made = []
    for n in range(count):
        consent = rng.random()
        consents = [{"purpose": "service", "channel": "phone", "granted": True}]
        if consent < 0.9:
            consents.append({"purpose": "marketing", "channel": "email", "granted": True})
        customer = customers_service.create_customer(conn, CustomerCreate.model_validate({
            "name": f"Customer {n:05d}", "email": f"customer{n:05d}@example.com", "phone": f"+86 138 {n:08d}",
            "birthday": dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20_000)),
            "timezone": rng.choice(ZONES), "preferred_channel": rng.choice(["email", "sms", None]),
            "consents": consents,
        }))
        reaches = consent < 0.85
        if 0.85 <= consent < 0.9:  # gave it, then withdrew it through the unsubscribe link
            customers_service.record_consent(conn, customer.id, ConsentChange(
                purpose="marketing", channel="email", granted=False, source="unsubscribe link"), at=START)
        devices = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            model = rng.choice(MODELS)
            device = devices_service.register_device(conn, DeviceCreate(
                id=f"SIM-{customer.id:06d}-{len(devices)}", model=model, owner=customer.id,
                purchased_on=START.date() - dt.timedelta(days=rng.randrange(30, 3650))))
            devices.append((device.id, device.kind))
        propensity = rng.choices(range(3), weights=PROPENSITY_WEIGHTS)[0]
        made.append(SimCustomer(customer.id, propensity, reaches, devices))
    return made


def _templates(conn: Connection) -> None:
    """The seeded templates with a 20% holdout each, and a spend source of their own, so one offer's conversions
    never count for another."""
    for code, truth in TRUTH.items():
        template = service.get_template(conn, code)
        fields = template.model_dump(exclude={"id", "created_at", "updated_at"})
        service.update_template(conn, code, TemplateCreate.model_validate(
            {**fields, "holdout_share": HOLDOUT, "conversion_source": truth["source"]}))


def _simulate(
    database: Database, transports: Transports, customers: list[SimCustomer], days: int, rng: random.Random
) -> dict[str, Tally]:
    """Issue on each customer's random days, deliver, and let them respond within the offer's window."""
    plan: dict[int, list[tuple[SimCustomer, str]]] = defaultdict(list)
    for customer in customers:
        for code, truth in TRUTH.items():
            if code == "birthday-coupon" or rng.random() >= truth["yearly"]:
                continue
            if code == "consumables" and not any(kind != "oven" for _id, kind in customer.devices):
                continue
            plan[rng.randrange(days)].append((customer, code))
    birthdays = _birthday_days(database, customers, days)
    for day, customer in birthdays:
        plan[day].append((customer, "birthday-coupon"))
    responses: dict[int, list[tuple[dt.datetime, str, dict]]] = defaultdict(list)
    tallies = {code: Tally() for code in TRUTH}
    last_day = days + 100  # the windows of the last offers close
    issued = 0
    tick = time.perf_counter()
    for day in range(last_day):
        moment = START + dt.timedelta(days=day, hours=10)
        with database.transaction() as conn:
            for customer, code in plan.get(day, []):
                device_id = next((d for d, kind in customer.devices if code != "consumables" or kind != "oven"),
                                 customer.devices[0][0])
                outcome = service.issue_offer(conn, template_code=code, customer_id=customer.id,
                                              device_id=device_id, key=f"bench:{code}:{customer.id}:{day}",
                                              now=moment, rule_id=f"bench-{code}")
                if outcome.kind == "skipped":
                    continue
                issued += 1
                _respond(outcome, customer, code, moment, tallies[code], responses, rng, START, day)
        end_of_day = START + dt.timedelta(days=day + 1)
        with database.transaction() as conn:
            deliver_due(conn, now=end_of_day, transports=transports, per_channel=100_000)
        with database.transaction() as conn:
            for at, kind, response in sorted(responses.pop(day, []), key=lambda r: r[0]):
                if kind == "redeem":
                    service.redeem(conn, response["code"], Redemption(customer_id=response["customer_id"],
                                                                      amount=response["amount"]), now=at)
                else:
                    customers_service.record_spend(conn, customer_id=response["customer_id"],
                                                   amount=response["amount"], source=response["source"],
                                                   key=response["key"], at=at)
            service.expire_due(conn, now=end_of_day, limit=100_000)
            if day % 30 == 0:
                customers_service.refresh_segments(conn, now=end_of_day)
        if day % 60 == 59:
            print(f"  day {day + 1}: {issued:,} offers and holdouts so far ({time.perf_counter() - tick:.0f} s)")
    return tallies


def _birthday_days(database: Database, customers: list[SimCustomer], days: int) -> list[tuple[int, SimCustomer]]:
    """The day three days before each customer's birthday in the simulated year, as the birthday rule would see
    it (its window is a week)."""
    with database.connection() as conn:
        birthdays = {c.id: c.birthday for c in customers_service.list_customers(conn, q=None, limit=10**6,
                                                                                offset=0).items}
    found = []
    for customer in customers:
        birthday = birthdays[customer.id]
        occurrence = service.next_birthday(birthday, START.date() + dt.timedelta(days=3))
        day = (occurrence - START.date()).days - 3
        if 0 <= day < days:
            found.append((day, customer))
    return found


def _respond(outcome, customer: SimCustomer, code: str, moment: dt.datetime, tally: Tally,
             responses: dict[int, list], rng: random.Random, start: dt.datetime, day: int) -> None:
    """Draw the customer's true response and schedule it inside the offer's window."""
    truth = TRUTH[code]
    p0, p1 = truth["p0"][customer.propensity], truth["p1"][customer.propensity]
    tally.assignments += 1
    tally.true_uplift += (p1 - p0) if customer.consents else 0.0
    offer = outcome.offer
    reached = offer is not None and offer.status in ("issued", "delivered")
    probability = p1 if reached else p0
    if rng.random() >= probability:
        return
    amount = Decimal(truth["amount"]) * Decimal(rng.uniform(0.7, 1.3)).quantize(Decimal("0.01"))
    if offer is not None:
        window_start = offer.send_at if reached and offer.send_at else moment
        window_end = offer.expires_at if reached and offer.expires_at else window_start + dt.timedelta(days=30)
        window_end = min(window_end, offer.issued_at + _validity(code)) - dt.timedelta(minutes=1)
    else:
        window_start, window_end = moment, moment + _validity(code) - dt.timedelta(minutes=1)
    at = window_start + (window_end - window_start) * rng.random()
    response_day = max((at - start).days, day)
    group = "treated" if offer is not None else "holdout"
    tally.conversions[group] += 1
    if reached:
        responses[response_day].append((at, "redeem", {"code": offer.code, "customer_id": customer.id,
                                                         "amount": amount}))
    else:
        responses[response_day].append((at, "spend", {
            "customer_id": customer.id, "amount": amount if amount > 0 else Decimal("1.00"),
            "source": truth["source"], "key": f"bench:{code}:{customer.id}:{day}:own"}))


VALIDITY = {"trade-in": 90, "consumables": 60, "extended-warranty": 60, "member-cleaning": 60,
            "birthday-coupon": 30}


def _validity(code: str) -> dt.timedelta:
    return dt.timedelta(days=VALIDITY[code])


def _print(by_template, by_segment, tallies: dict[str, Tally], mailbox: _Mailbox, elapsed: float) -> None:
    print(f"\n  {mailbox.received:,} e-mails received by the SMTP server, {len(mailbox.message_ids):,} distinct "
          f"Message-IDs; {elapsed:.0f} s in all\n")
    header = (f"  {'template':<18} {'offered':>7} {'holdout':>7} {'deliv.':>6} {'redeem.':>7} {'expired':>7} "
              f"{'revenue':>10}  {'conv. off.':>10} {'conv. hold':>10}  {'uplift [95% CI]':<24} {'truth':>6}  within")
    print(header)
    inside = 0
    for row in by_template.rows:
        tally = tallies[row.key]
        truth = tally.true_uplift / tally.assignments if tally.assignments else float("nan")
        within = row.uplift_low is not None and row.uplift_low <= truth <= row.uplift_high
        inside += within
        interval = (f"{row.uplift:+.3f} [{row.uplift_low:+.3f}, {row.uplift_high:+.3f}]"
                    if row.uplift is not None else "-")
        print(f"  {row.key:<18} {row.treated:>7,} {row.holdout:>7,} {row.delivered:>6,} {row.redeemed:>7,} "
              f"{row.expired:>7,} {row.revenue:>10,.0f}  {row.conversion_treated or 0:>10.3f} "
              f"{row.conversion_holdout or 0:>10.3f}  {interval:<24} {truth:>+6.3f}  {'yes' if within else 'NO'}")
    print(f"\n  {inside} of {len(by_template.rows)} templates: the true uplift lies within the report's 95% interval")
    print("\n  by segment (value segment when issued):")
    for row in by_segment.rows:
        interval = (f"{row.uplift:+.3f} [{row.uplift_low:+.3f}, {row.uplift_high:+.3f}]"
                    if row.uplift is not None else "-")
        print(f"  {row.key:<18} offered {row.treated:>6,}  holdout {row.holdout:>6,}  uplift {interval}")
