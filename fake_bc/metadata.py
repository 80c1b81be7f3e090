"""``$metadata``: a CSDL (OData v4) document generated from the same entity types the fake serves."""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import quoteattr

from fake_bc.entities import COMPANY, NAMESPACE, EntityType


def _entity_type(entity: EntityType, navigation: Iterable[tuple[str, EntityType]]) -> list[str]:
    lines = [f"<EntityType Name={quoteattr(entity.name)}>", '<Key><PropertyRef Name="id"/></Key>']
    for prop in entity.props:
        nullable = ' Nullable="false"' if prop.name == "id" else ""
        lines.append(f"<Property Name={quoteattr(prop.name)} Type={quoteattr(prop.type)}{nullable}/>")
    for name, target in navigation:
        lines.append(f"<NavigationProperty Name={quoteattr(name)} Type=\"Collection({NAMESPACE}.{target.name})\" "
                     'ContainsTarget="true"/>')
    lines.append("</EntityType>")
    return lines


def csdl(company_sets: Iterable[EntityType], child_sets: dict[str, EntityType]) -> str:
    """The document for one API route: ``companies`` contains the company-scoped sets, which contain their
    children (salesOrders → salesOrderLines)."""
    company_sets = list(company_sets)
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
             "<edmx:DataServices>",
             f'<Schema Namespace="{NAMESPACE}" xmlns="http://docs.oasis-open.org/odata/ns/edm">']
    lines += _entity_type(COMPANY, ((e.set_name, e) for e in company_sets))
    seen = {COMPANY.name}
    for entity in company_sets:
        nav = [(nav, child_sets[child]) for nav, child in entity.children if child in child_sets]
        if entity.name not in seen:
            lines += _entity_type(entity, nav)
            seen.add(entity.name)
        for _, child in nav:
            if child.name not in seen:
                lines += _entity_type(child, ())
                seen.add(child.name)
    lines.append('<EntityContainer Name="NAV">')
    lines.append(f'<EntitySet Name="companies" EntityType="{NAMESPACE}.company">')
    for entity in company_sets:
        lines.append(f"<NavigationPropertyBinding Path={quoteattr(entity.set_name)} "
                     f"Target={quoteattr(entity.set_name)}/>")
    lines.append("</EntitySet>")
    for entity in company_sets:
        lines.append(f"<EntitySet Name={quoteattr(entity.set_name)} "
                     f"EntityType={quoteattr(f'{NAMESPACE}.{entity.name}')}/>")
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines)
