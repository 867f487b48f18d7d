from pathlib import Path

from everkit.ocpp201 import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "ocpp201-device-model.md"


def test_the_committed_device_model_page_is_generated_from_the_model() -> None:
    assert DOC.read_text() == reference.document(), (
        "regenerate: python -m everkit.ocpp201.reference > docs/ocpp201-device-model.md"
    )
