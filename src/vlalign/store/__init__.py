"""Storage formats: the FFCV .beton of images and the float16 embedding store."""
