"""Medical images with their geometry, below the pipeline: readers (PNG/NPY, NIfTI, DICOM series, DICOM-SEG), one
orientation and spacing by MONAI's transforms, the U-Net bundle and its sliding-window inference, and synthetic
phantoms. Imports nothing of tracking or the steps, so the registered model's code (tracking.pyfunc) can load it.
"""
