"""Where the classroom tests find the built site and keep their screenshots."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT / "tests", ROOT / "docs" / "_ext"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
SITE = ROOT / "docs" / "_build" / "html"
ARTIFACTS = ROOT / "artifacts"
SHOTS = ARTIFACTS / "screenshots" / "classroom"
