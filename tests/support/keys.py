from pathlib import Path

from buffer.keys import Signer, load_or_create


def make_signer(tmp_path: Path) -> Signer:
    signer, _ = load_or_create(tmp_path / "signing.key")
    return signer
