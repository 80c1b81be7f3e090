"""Seed data and in-memory tables.

The seed is deterministic (ids are uuid5 of company, set and number), generated once per process and copied
lazily: each (tenant, environment) gets its own ``Store`` on first use, and each table inside it is copied from
the seed on first access, so a fresh fake per test costs almost nothing and writes never leak between them.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from fake_bc.entities import (
    COMPANY,
    CUSTOMER,
    ITEM,
    SALES_ORDER,
    SALES_ORDER_LINE,
    VENDOR,
    ZERO_GUID,
    EntityType,
)

NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://api.businesscentral.dynamics.com/fake-bc")
DEMO_COMPANY = "CRONUS USA, Inc."
SEED_EPOCH = datetime(2025, 1, 6, 9, 0, 0, tzinfo=UTC)


def guid(*parts: str) -> str:
    return str(uuid.uuid5(NS, "/".join(parts)))


def iso(instant: datetime | float) -> str:
    """BC's timestamp style: milliseconds and a ``Z``."""
    if not isinstance(instant, datetime):
        instant = datetime.fromtimestamp(instant, UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def make_etag(row_id: str, version: int) -> str:
    """A weak ETag shaped like BC's: base64 of ``'19;<19 digits>;00;'`` (so it starts ``W/"JzE5O``)."""
    digits = f"{zlib.crc32(row_id.encode()):010d}{version % 10**9:09d}"
    inner = base64.b64encode(f"'{len(digits)};{digits};00;'".encode()).decode()
    return f'W/"{inner}"'


@dataclass(frozen=True)
class SeedSpec:
    """How much demo data each company gets; the defaults make paging real."""

    companies: tuple[str, ...] = (DEMO_COMPANY, "My Company")
    customers: int = 250
    items: int = 300
    vendors: int = 40
    sales_orders: int = 12


@dataclass(frozen=True)
class Seed:
    companies: tuple[dict[str, Any], ...]
    tables: dict[tuple[str, str], tuple[dict[str, Any], ...]]  # (company id, set name) -> rows


_FIRST_CUSTOMERS = ("Adatum Corporation", "Trey Research", "School of Fine Art", "Alpine Ski House", "Relecloud")
_FIRST_VENDORS = ("Fabrikam, Inc.", "First Up Consultants", "Graphic Design Institute", "Wide World Importers",
                  "Nod Publishers")
_PREFIXES = ("Northwind", "Contoso", "Fabrikam", "Litware", "Proseware", "Tailspin", "Wingtip", "Woodgrove", "Coho",
             "Lucerne", "Margie's", "Blue Yonder", "Humongous", "Wide World", "Southridge", "Fourth Coffee",
             "VanArsdel", "Lamna", "Datum", "Bellows")
_NOUNS = ("Traders", "Outfitters", "Supplies", "Logistics", "Interiors", "Furniture", "Systems", "Foods",
          "Partners", "Travel", "Studios", "Electronics", "Wholesale")
_SUFFIXES = ("Inc.", "Ltd.", "LLC", "Corp.")
_CITIES = (("Atlanta", "GA", "31772"), ("Chicago", "IL", "61236"), ("Miami", "FL", "37125"),
           ("Seattle", "WA", "98101"), ("Boston", "MA", "02108"), ("Denver", "CO", "80202"),
           ("Austin", "TX", "73301"), ("Portland", "OR", "97201"))
_ITEM_NAMES = ("ATHENS", "PARIS", "ROME", "BERLIN", "LONDON", "MUNICH", "AMSTERDAM", "TOKYO", "ANTWERP", "SYDNEY",
               "MEXICO", "MADRID")
_ITEM_KINDS = (("Desk", "TABLE"), ("Guest Chair, black", "CHAIR"), ("Mobile Pedestal", "MISC"),
               ("Whiteboard", "MISC"), ("Conference Table", "TABLE"), ("Swivel Chair, blue", "CHAIR"),
               ("Storage Unit", "MISC"), ("Desk Lamp", "MISC"), ("Bookshelf", "MISC"), ("Filing Cabinet", "MISC"))
_SIZES = ("", " Large", " Compact")


def _party_name(i: int, first: tuple[str, ...]) -> str:
    if i < len(first):
        return first[i]
    j = i - len(first)
    return f"{_PREFIXES[j % 20]} {_NOUNS[(j // 20) % 13]} {_SUFFIXES[(j // 260) % 4]}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())[:24] or "example"


def _address(i: int) -> dict[str, str]:
    city, state, postal = _CITIES[i % len(_CITIES)]
    return {"addressLine1": f"{100 + i * 3} Main Street", "addressLine2": "", "city": city, "state": state,
            "country": "US", "postalCode": postal}


@lru_cache(maxsize=8)
def build_seed(spec: SeedSpec = SeedSpec()) -> Seed:
    """Generate the demo data once per process; every store copies from it."""
    companies = []
    tables: dict[tuple[str, str], tuple[dict[str, Any], ...]] = {}
    for c, name in enumerate(spec.companies):
        cid = guid("company", name)
        companies.append({
            "id": cid, "systemVersion": "25.4.29661.30209", "timestamp": 1000 + c, "name": name,
            "displayName": name, "businessProfileId": "", "systemCreatedAt": iso(SEED_EPOCH),
            "systemCreatedBy": ZERO_GUID, "systemModifiedAt": iso(SEED_EPOCH), "systemModifiedBy": ZERO_GUID,
        })
        customers = [_customer(name, i) for i in range(spec.customers)]
        items = [_item(name, i) for i in range(spec.items)]
        vendors = [_vendor(name, i) for i in range(spec.vendors)]
        orders, lines = _sales_orders(name, spec.sales_orders, customers, items)
        for entity, rows in ((CUSTOMER, customers), (ITEM, items), (VENDOR, vendors), (SALES_ORDER, orders),
                             (SALES_ORDER_LINE, lines)):
            tables[(cid, entity.set_name)] = tuple(rows)
    return Seed(tuple(companies), tables)


def _modified(i: int) -> str:
    return iso(SEED_EPOCH + timedelta(minutes=i, milliseconds=37 * i % 1000))


def _customer(company: str, i: int) -> dict[str, Any]:
    number = f"{10000 + i * 10}"
    name = _party_name(i, _FIRST_CUSTOMERS)
    return {
        "id": guid(company, "customers", number), "number": number, "displayName": name,
        "type": "Person" if i % 7 == 6 else "Company", **_address(i), "phoneNumber": f"555-01{i % 100:02d}",
        "email": f"contact@{_slug(name)}.example.com", "website": "", "salespersonCode": ("PS", "JO", "BC")[i % 3],
        "balanceDue": round((i * 137.25) % 5000, 2), "creditLimit": (0, 5000, 10000)[i % 3],
        "taxLiable": i % 2 == 0, "currencyCode": "", "blocked": "All" if i % 50 == 49 else " ",
        "lastModifiedDateTime": _modified(i),
    }


def _vendor(company: str, i: int) -> dict[str, Any]:
    number = f"{20000 + i * 10}"
    name = _party_name(i, _FIRST_VENDORS)
    return {
        "id": guid(company, "vendors", number), "number": number, "displayName": name, **_address(i + 3),
        "phoneNumber": f"555-02{i % 100:02d}", "email": f"orders@{_slug(name)}.example.com", "website": "",
        "taxRegistrationNumber": "", "currencyCode": "", "balance": round((i * 211.5) % 9000, 2), "blocked": " ",
        "lastModifiedDateTime": _modified(i),
    }


def _item(company: str, i: int) -> dict[str, Any]:
    number = f"{1000 + i}"
    kind, category = _ITEM_KINDS[(i // 12) % 10]
    price = round(50 + (i * 73) % 950 + (0.5 if i % 2 else 0), 2)
    return {
        "id": guid(company, "items", number), "number": number,
        "displayName": f"{_ITEM_NAMES[i % 12]} {kind}{_SIZES[(i // 120) % 3]}",
        "type": "Service" if i % 10 == 9 else "Inventory", "itemCategoryCode": category, "blocked": False,
        "gtin": "", "inventory": 0 if i % 10 == 9 else (i * 7) % 120, "unitPrice": price,
        "priceIncludesTax": False, "unitCost": round(price * 0.6, 2), "baseUnitOfMeasureCode": "PCS",
        "lastModifiedDateTime": _modified(i),
    }


def _sales_orders(company: str, n: int, customers: list[dict[str, Any]], items: list[dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    orders, lines = [], []
    for i in range(n):
        number = f"S-ORD{101001 + i}"
        oid = guid(company, "salesOrders", number)
        customer = customers[(i * 7) % len(customers)] if customers else None
        total = 0.0
        for j in range((i % 4) + 1):
            if not items:
                break
            item = items[(i * 11 + j * 3) % len(items)]
            quantity = j + 1
            amount = round(quantity * item["unitPrice"], 2)
            total += amount
            lines.append({
                "id": guid(company, "salesOrderLines", number, str(j)), "documentId": oid,
                "sequence": 10000 * (j + 1), "itemId": item["id"], "lineType": "Item",
                "lineObjectNumber": item["number"], "description": item["displayName"], "quantity": quantity,
                "unitPrice": item["unitPrice"], "netAmount": amount,
            })
        tax = round(total * 0.08, 2)
        day = f"2025-01-{i % 28 + 1:02d}"
        orders.append({
            "id": oid, "number": number, "externalDocumentNumber": "", "orderDate": day, "postingDate": day,
            "customerId": customer["id"] if customer else ZERO_GUID,
            "customerNumber": customer["number"] if customer else "",
            "customerName": customer["displayName"] if customer else "", "currencyCode": "", "status": "Open",
            "totalAmountExcludingTax": round(total, 2), "totalTaxAmount": tax,
            "totalAmountIncludingTax": round(total + tax, 2), "lastModifiedDateTime": _modified(i),
        })
    return orders, lines


def _sort_value(value: Any) -> tuple[int, Any]:
    """A key that orders any JSON value without a TypeError (custom API rows may mix types)."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, repr(value))


class Table:
    """The rows of one entity set in one company. Rows are output-ready dicts (``@odata.etag`` first) and are
    replaced, never mutated, on write, so a body already serialised never changes under a reader."""

    def __init__(self, entity: EntityType, rows: Iterable[dict[str, Any]]):
        self.entity = entity
        self.rows: dict[str, dict[str, Any]] = {}
        self.seq: dict[str, int] = {}  # insertion order, kept for deleted rows too (skiptoken positions)
        self.tombstones: dict[str, dict[str, Any]] = {}
        self._sorted: list[dict[str, Any]] | None = None
        self._encoded: dict[str, bytes] = {}  # row id -> the row as JSON (a page is a join of these)
        for row in rows:
            self.put(row, 1)

    def put(self, fields: dict[str, Any], version: int) -> dict[str, Any]:
        row_id = str(fields["id"])
        row = {"@odata.etag": make_etag(row_id, version), **{k: v for k, v in fields.items() if k != "@odata.etag"}}
        if row_id not in self.seq:
            self.seq[row_id] = len(self.seq)
        self.rows[row_id] = row
        self._encoded.pop(row_id, None)
        self._sorted = None
        return row

    def delete(self, row_id: str) -> dict[str, Any]:
        row = self.rows.pop(row_id)
        self.tombstones[row_id] = row
        self._encoded.pop(row_id, None)
        self._sorted = None
        return row

    def encoded(self, row: dict[str, Any]) -> bytes:
        """The row as JSON, encoded once per version: serialising pages dominated the cost of a GET."""
        data = self._encoded.get(row["id"])
        if data is None:
            data = self._encoded[row["id"]] = json.dumps(row, separators=(",", ":")).encode()
        return data

    def sort_key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return (*(_sort_value(row.get(f)) for f in self.entity.order_by), self.seq.get(str(row.get("id")), 0))

    def ordered(self, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows in BC's default order (primary key, then insertion); ``extra`` places a deleted row."""
        if extra is not None:
            return sorted([*self.rows.values(), extra], key=self.sort_key)
        if self._sorted is None:
            self._sorted = sorted(self.rows.values(), key=self.sort_key)
        return self._sorted

    def next_number(self) -> str:
        """The next number in the set's series (the last number plus the step, keeping prefix and width)."""
        best: tuple[int, str, int] | None = None
        for row in self.rows.values():
            match = re.match(r"^(.*?)(\d+)$", str(row.get("number", "")))
            if match and (best is None or int(match[2]) > best[0]):
                best = (int(match[2]), match[1], len(match[2]))
        if best is None:
            return f"{self.entity.number_step or 1:05d}"
        value, prefix, width = best
        return f"{prefix}{value + (self.entity.number_step or 1):0{width}d}"


@dataclass
class Store:
    """One (tenant, environment)'s data. ``lock`` serialises writes from the loopback server's threads."""

    seed: Seed
    version: int = 1000
    tables: dict[tuple[str, str, str], Table] = field(default_factory=dict)  # (api, company id, set) -> table
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.companies = Table(COMPANY, self.seed.companies)

    def next_version(self) -> int:
        self.version += 1
        return self.version
