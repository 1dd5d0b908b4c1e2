"""One identification: embed the photo's views, search (batched across requests), verify the
shortlist geometrically and calibrate the confidence and the "not in the gallery" answer."""
