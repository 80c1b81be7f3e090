"""The entity types the fake serves, as data: properties and their Edm types, keys, default order, children.

One description drives validation of queries and bodies, ``$metadata`` and the seed, so they cannot disagree.
Property sets are a representative subset of BC API v2.0 (the properties portals commonly read and write).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from fake_bc.errors import BadRequest

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})$")
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
NAMESPACE = "Microsoft.NAV"

STRING, GUID_T, DECIMAL, INT32, INT64 = "Edm.String", "Edm.Guid", "Edm.Decimal", "Edm.Int32", "Edm.Int64"
BOOLEAN, DATE, DATETIME = "Edm.Boolean", "Edm.Date", "Edm.DateTimeOffset"
NUMERIC = frozenset({DECIMAL, INT32, INT64})


@dataclass(frozen=True)
class Prop:
    name: str
    type: str = STRING
    read_only: bool = False


@dataclass(frozen=True, eq=False)  # identity hash: cheap cache keys, and two APIs may reuse a type name
class EntityType:
    """One entity type and its entity set; ``children`` maps a navigation property to a child set name."""

    name: str  # e.g. "customer" (type Microsoft.NAV.customer)
    set_name: str  # e.g. "customers"
    props: tuple[Prop, ...]
    order_by: tuple[str, ...] = ("number",)  # BC's default order: the primary key
    read_only: bool = False
    children: tuple[tuple[str, str], ...] = ()  # (navigation property, child set name)
    parent_field: str = ""  # for a child set: the property holding the parent's id
    number_step: int = 0  # next "number" = last + step when a POST gives none (0: no numbering)
    by_name: dict[str, Prop] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.props})

    @property
    def qualified(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    def prop(self, name: str) -> Prop:
        found = self.by_name.get(name)
        if found is None:
            raise BadRequest(f"Could not find a property named '{name[:100]}' on type '{self.qualified}'.")
        return found

    def child_set(self, navigation: str) -> str | None:
        return next((child for nav, child in self.children if nav == navigation), None)

    def defaults(self) -> dict[str, Any]:
        return {p.name: default_value(p.type) for p in self.props}


def default_value(edm: str) -> Any:
    return {STRING: "", GUID_T: ZERO_GUID, DECIMAL: 0, INT32: 0, INT64: 0, BOOLEAN: False, DATE: "0001-01-01",
            DATETIME: "0001-01-01T00:00:00Z"}.get(edm, "")


def coerce(prop: Prop, value: Any, type_name: str) -> Any:
    """A JSON body value checked against the property's Edm type (BadRequest names the mismatch)."""
    edm = prop.type
    ok = False
    if edm == STRING:
        ok = isinstance(value, str)
    elif edm == BOOLEAN:
        ok = isinstance(value, bool)
    elif edm in NUMERIC and isinstance(value, int | float) and not isinstance(value, bool):
        bound = {DECIMAL: 10**28, INT32: 2**31, INT64: 2**63}[edm]  # BC decimals hold 28 digits
        ok = -bound <= value < bound and (isinstance(value, int) or math.isfinite(value))
        if ok and edm != DECIMAL:
            ok = float(value).is_integer()
            value = int(value) if ok else value
    elif edm == GUID_T:
        ok = isinstance(value, str) and bool(GUID.match(value))
        value = value.lower() if ok else value
    elif edm == DATE:
        ok = isinstance(value, str) and bool(_DATE.match(value)) and _valid(date.fromisoformat, value)
    elif edm == DATETIME:
        ok = isinstance(value, str) and bool(_DATETIME.match(value)) and _valid(datetime.fromisoformat, value)
    if not ok:
        shown = repr(value) if not isinstance(value, str) else value
        raise BadRequest(f"Cannot convert the literal '{shown[:80]}' to the expected type '{edm}' of the "
                         f"property '{prop.name}' on type '{type_name}'.")
    return value


def _valid(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def infer(name: str, set_name: str, rows: list[dict[str, Any]]) -> EntityType:
    """An entity type for a custom API from the rows a test registers: types from the first non-null value."""
    types: dict[str, str] = {"id": GUID_T}
    for row in rows:
        for key, value in row.items():
            if not key.startswith("@") and key not in types and value is not None:
                types[key] = _edm_of(value)
    for row in rows:  # properties that are only ever null
        for key in row:
            if not key.startswith("@"):
                types.setdefault(key, STRING)
    props = tuple(Prop(k, t, read_only=k == "id") for k, t in types.items())
    order = ("number",) if "number" in types else ()
    return EntityType(name, set_name, props, order_by=order)


def _edm_of(value: Any) -> str:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT32 if -(2**31) <= value < 2**31 else INT64
    if isinstance(value, float):
        return DECIMAL
    if isinstance(value, str):
        if GUID.match(value):
            return GUID_T
        if _DATE.match(value):
            return DATE
        if _DATETIME.match(value):
            return DATETIME
    return STRING


_MODIFIED = Prop("lastModifiedDateTime", DATETIME, read_only=True)
_ID = Prop("id", GUID_T, read_only=True)

COMPANY = EntityType("company", "companies", (
    _ID, Prop("systemVersion", read_only=True), Prop("timestamp", INT64, read_only=True), Prop("name"),
    Prop("displayName"), Prop("businessProfileId"), Prop("systemCreatedAt", DATETIME, read_only=True),
    Prop("systemCreatedBy", GUID_T, read_only=True), Prop("systemModifiedAt", DATETIME, read_only=True),
    Prop("systemModifiedBy", GUID_T, read_only=True),
), order_by=("name",), read_only=True)

CUSTOMER = EntityType("customer", "customers", (
    _ID, Prop("number"), Prop("displayName"), Prop("type"), Prop("addressLine1"), Prop("addressLine2"),
    Prop("city"), Prop("state"), Prop("country"), Prop("postalCode"), Prop("phoneNumber"), Prop("email"),
    Prop("website"), Prop("salespersonCode"), Prop("balanceDue", DECIMAL, read_only=True),
    Prop("creditLimit", DECIMAL), Prop("taxLiable", BOOLEAN), Prop("currencyCode"), Prop("blocked"), _MODIFIED,
), number_step=10)

VENDOR = EntityType("vendor", "vendors", (
    _ID, Prop("number"), Prop("displayName"), Prop("addressLine1"), Prop("addressLine2"), Prop("city"),
    Prop("state"), Prop("country"), Prop("postalCode"), Prop("phoneNumber"), Prop("email"), Prop("website"),
    Prop("taxRegistrationNumber"), Prop("currencyCode"), Prop("balance", DECIMAL, read_only=True),
    Prop("blocked"), _MODIFIED,
), number_step=10)

ITEM = EntityType("item", "items", (
    _ID, Prop("number"), Prop("displayName"), Prop("type"), Prop("itemCategoryCode"), Prop("blocked", BOOLEAN),
    Prop("gtin"), Prop("inventory", DECIMAL, read_only=True), Prop("unitPrice", DECIMAL),
    Prop("priceIncludesTax", BOOLEAN), Prop("unitCost", DECIMAL), Prop("baseUnitOfMeasureCode"), _MODIFIED,
), number_step=1)

SALES_ORDER = EntityType("salesOrder", "salesOrders", (
    _ID, Prop("number"), Prop("externalDocumentNumber"), Prop("orderDate", DATE), Prop("postingDate", DATE),
    Prop("customerId", GUID_T), Prop("customerNumber"), Prop("customerName"), Prop("currencyCode"),
    Prop("status", read_only=True), Prop("totalAmountExcludingTax", DECIMAL, read_only=True),
    Prop("totalTaxAmount", DECIMAL, read_only=True), Prop("totalAmountIncludingTax", DECIMAL, read_only=True),
    _MODIFIED,
), children=(("salesOrderLines", "salesOrderLines"),), number_step=1)

SALES_ORDER_LINE = EntityType("salesOrderLine", "salesOrderLines", (
    _ID, Prop("documentId", GUID_T, read_only=True), Prop("sequence", INT32), Prop("itemId", GUID_T),
    Prop("lineType"), Prop("lineObjectNumber"), Prop("description"), Prop("quantity", DECIMAL),
    Prop("unitPrice", DECIMAL), Prop("netAmount", DECIMAL, read_only=True),
), order_by=("sequence",), parent_field="documentId")

# Entity sets under companies({id}) in the standard API, and every standard type (for $metadata).
COMPANY_SETS: dict[str, EntityType] = {e.set_name: e for e in (CUSTOMER, VENDOR, ITEM, SALES_ORDER)}
CHILD_SETS: dict[str, EntityType] = {SALES_ORDER_LINE.set_name: SALES_ORDER_LINE}
STANDARD_TYPES: tuple[EntityType, ...] = (COMPANY, CUSTOMER, VENDOR, ITEM, SALES_ORDER, SALES_ORDER_LINE)
