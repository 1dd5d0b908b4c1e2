"""The REST answer's JSON shape and the proto's, both ways, in one place: corners and
correspondences are lists in JSON ([x, y], [photo_x, photo_y, gallery_x, gallery_y]) and
messages in whatart.proto (Point, Correspondence). The server converts its answer before
ParseDict; the Python client converts back after MessageToDict."""

from __future__ import annotations

CORRESPONDENCE = ("photo_x", "photo_y", "gallery_x", "gallery_y")
POINT = ("x", "y")


def to_message_shape(answer: dict) -> dict:
    """An Identification's to_json(), ready for json_format.ParseDict (in place)."""
    for painting in answer["paintings"]:
        painting["region"] = [dict(zip(POINT, corner, strict=True)) for corner in painting["region"]]
        explanation = painting.pop("explanation", None)
        if explanation:  # unset in the message where none was located
            painting["explanation"] = {
                "pairs": [dict(zip(CORRESPONDENCE, pair, strict=True)) for pair in explanation["pairs"]],
                "gallery_region": [dict(zip(POINT, corner, strict=True)) for corner in explanation["gallery_region"]],
            }
    return answer


def to_rest_shape(answer: dict) -> dict:
    """json_format.MessageToDict of an IdentifyResponse, in the REST answer's shape (in place)."""
    for painting in answer.get("paintings", []):
        painting["region"] = [[corner[name] for name in POINT] for corner in painting["region"]]
        if "explanation" in painting:
            explanation = painting["explanation"]
            explanation["pairs"] = [[pair[name] for name in CORRESPONDENCE] for pair in explanation.get("pairs", [])]
            explanation["gallery_region"] = [[corner[name] for name in POINT] for corner in explanation.get("gallery_region", [])]
    return answer
