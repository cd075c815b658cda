"""Reference data the API validates against: the codes OpenRTB bid requests carry.

Targeting is only useful if its values can match a bid request, so every code here
is the form OpenRTB 2.6 uses: ISO-3166-1 alpha-3 countries (`geo.country`), AdCOM
device types (`device.devicetype`), IAB Content Taxonomy 1.0 categories (`cat`).
"""

from __future__ import annotations

from typing import Final

import pycountry

COUNTRIES: Final[frozenset[str]] = frozenset(country.alpha_3 for country in pycountry.countries)
"""ISO-3166-1 alpha-3 codes (249 countries and territories)."""

DEVICE_TYPES: Final[dict[int, str]] = {
    1: "Mobile/Tablet",
    2: "Personal Computer",
    3: "Connected TV",
    4: "Phone",
    5: "Tablet",
    6: "Connected Device",
    7: "Set Top Box",
}
"""OpenRTB 2.6 (AdCOM 1.0 list "Device Types") codes."""

OPERATING_SYSTEMS: Final[frozenset[str]] = frozenset(
    {
        "android",
        "ios",
        "ipados",
        "windows",
        "macos",
        "linux",
        "chromeos",
        "tvos",
        "tizen",
        "webos",
        "roku",
        "fireos",
        "playstation",
        "xbox",
    }
)
"""Lower-case `device.os` names; the bidder compares them case-insensitively."""

# IAB Content Taxonomy 1.0: tier-1 category number -> how many tier-2 subcategories.
_IAB_SUBCATEGORIES: Final[dict[int, int]] = {
    1: 7,
    2: 23,
    3: 12,
    4: 11,
    5: 15,
    6: 9,
    7: 45,
    8: 18,
    9: 31,
    10: 9,
    11: 5,
    12: 3,
    13: 12,
    14: 8,
    15: 10,
    16: 7,
    17: 44,
    18: 6,
    19: 36,
    20: 27,
    21: 3,
    22: 4,
    23: 10,
    24: 0,
    25: 7,
    26: 4,
}

IAB_CATEGORIES: Final[frozenset[str]] = frozenset(
    [f"IAB{tier1}" for tier1 in _IAB_SUBCATEGORIES]
    + [
        f"IAB{tier1}-{sub}"
        for tier1, count in _IAB_SUBCATEGORIES.items()
        for sub in range(1, count + 1)
    ]
)
"""`IAB1` ... `IAB26-4`, as OpenRTB's `cat`, `bcat` and `bid.cat` use them."""

STANDARD_BANNER_SIZES: Final[tuple[str, ...]] = (
    "300x250",
    "728x90",
    "320x50",
    "160x600",
    "300x600",
    "970x250",
    "320x100",
    "468x60",
)
"""The IAB sizes most exchanges carry (the demo data uses the first five)."""
