"""Georeferenced scenes: windowed raster reads, band scaling, tiles, footprints, STAC, GeoJSON.

This layer sits beside :mod:`hpsh_tf2.data` (below :mod:`hpsh_tf2.index`) and needs rasterio
(GDAL), pyproj, shapely and pystac (the ``geo`` extra).
"""
