"""torch Datasets over the domain readers: map-style, iterable-style, samplers, collate."""
