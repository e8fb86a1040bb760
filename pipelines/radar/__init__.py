"""Radar archives (HKO-7 PNG, MeteoSwiss GIF, FMI PGM, KNMI HDF5,
OPERA/ODIM_H5 composites, BoM Rainfields NetCDF) to canonical HKO-7 pixel windows.

One module per input format (`hko`, `mch`, `fmi`, `knmi`, `odim`, `bom`), registered in `formats`; `archive`
unpacks safely, `timeline` handles timestamps and gaps, `days` plans splits and windows,
`preprocess` turns decoded dBZ into cropped, resized pixels + masks, `sequence` reads the
latest frames for nowcasting and `prepare` wires it all to the generic Ray Data driver.
"""
