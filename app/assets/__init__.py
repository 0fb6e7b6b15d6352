"""Third-party browser code the process serves (the LiveKit client, Swagger UI), fetched
from the npm registry by the lockfile's URL and integrity hash when Node is not around.

`npm` fetches and verifies one locked package; `browser` knows which packages the console
and the API reference need and where each is served from.
"""

from app.assets.browser import LIVEKIT_CLIENT, PACKAGES, SWAGGER_UI, UPLOT, AssetState, AssetStatus, BrowserAssets
from app.assets.npm import LockedPackage, NpmFetchError, fetch_package, locked_package

__all__ = [
    "LIVEKIT_CLIENT",
    "PACKAGES",
    "SWAGGER_UI",
    "UPLOT",
    "AssetState",
    "AssetStatus",
    "BrowserAssets",
    "LockedPackage",
    "NpmFetchError",
    "fetch_package",
    "locked_package",
]
