"""The Al–Si casting alloys of the AlloyGAN study (Yin 2024, Part IV, Table 6).

Compositions are wt% (balance Al). Every alloy was cast at the four cooling rates; only A356, A369 and
A393 were also cast with Sr/P modification (Sr for the eutectic Si of hypoeutectic alloys, P for the primary
Si of the hypereutectic A393), so Table 6 holds 9 x 4 + 3 x 4 = 48 conditions.
"""

from __future__ import annotations

ELEMENTS = ("Si", "Fe", "Cu", "Mn", "Mg", "Ni")

ALLOYS: dict[str, dict[str, float]] = {
    "A356": {"Si": 7.0, "Fe": 0.5, "Cu": 0.25, "Mn": 0.35, "Mg": 0.3, "Ni": 0.0},
    "A360": {"Si": 9.5, "Fe": 0.6, "Cu": 0.1, "Mn": 0.05, "Mg": 0.5, "Ni": 0.0},
    "A369": {"Si": 11.5, "Fe": 1.0, "Cu": 0.5, "Mn": 0.25, "Mg": 0.4, "Ni": 0.05},
    "A339": {"Si": 12.0, "Fe": 1.2, "Cu": 2.0, "Mn": 0.5, "Mg": 1.0, "Ni": 1.0},
    "A393": {"Si": 22.0, "Fe": 1.3, "Cu": 0.9, "Mn": 0.1, "Mg": 1.0, "Ni": 2.3},
    "A355": {"Si": 5.0, "Fe": 0.65, "Cu": 1.25, "Mn": 0.55, "Mg": 0.5, "Ni": 0.0},
    "A308": {"Si": 5.5, "Fe": 0.8, "Cu": 4.5, "Mn": 0.5, "Mg": 0.1, "Ni": 0.0},
    "A319": {"Si": 6.0, "Fe": 1.0, "Cu": 4.0, "Mn": 0.4, "Mg": 0.55, "Ni": 0.35},
    "A332": {"Si": 9.5, "Fe": 0.9, "Cu": 3.0, "Mn": 0.5, "Mg": 2.1, "Ni": 0.5},
}

COOLING_RATES = (2.5, 10.0, 57.0, 143.0)  # K/s
MODIFIABLE = ("A356", "A369", "A393")  # cast with and without Sr/P; the others without only
CONDITION_COLUMNS = ("Si", "Fe", "Cu", "Mn", "Mg", "Ni", "cooling_rate", "modified")

# Table 7: wt% of the element -> at% of its reaction product (the AlloyGAN prior w of eq. 9).
REACTION_PRODUCTS = {"Si": "Si", "Fe": "Al3Fe", "Cu": "Al2Cu", "Mn": "Al12Mn", "Mg": "Mg2Si", "Ni": "Al3Ni"}
REACTION_FACTORS = {"Si": 0.036, "Fe": 0.018, "Cu": 0.016, "Mn": 0.018, "Mg": 0.021, "Ni": 0.017}


def alloy_by_name(name: str) -> dict[str, float]:
    """The composition (wt%) of a Table 6 alloy, case-insensitive ("a356" is A356); a copy."""
    for key, composition in ALLOYS.items():
        if key.lower() == str(name).strip().lower():
            return dict(composition)
    raise ValueError(f"unknown alloy {name!r}; Table 6 alloys are {', '.join(ALLOYS)}")


def canonical_alloy_name(name: str) -> str:
    alloy_by_name(name)
    return next(key for key in ALLOYS if key.lower() == str(name).strip().lower())


def table6_conditions() -> list[dict]:
    """Every (alloy, cooling rate, modified) of Table 6 (48), each with its composition columns."""
    conditions = []
    for alloy, composition in ALLOYS.items():
        for modified in ((0, 1) if alloy in MODIFIABLE else (0,)):
            for rate in COOLING_RATES:
                conditions.append({"alloy": alloy, **composition, "cooling_rate": rate, "modified": modified})
    return conditions


def condition_label(alloy: str, cooling_rate: float, modified: int) -> str:
    """The condition's name, e.g. "A356|10|1": what the FID-domain feature extractor classifies."""
    return f"{alloy}|{float(cooling_rate):g}|{int(modified)}"
