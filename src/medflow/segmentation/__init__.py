"""data.task=segmentation: image and mask pairs (2D PNG/NPY, 3D NIfTI, DICOM series and DICOM-SEG) with their voxel
geometry, MONAI's U-Net trained on foreground-weighted patches, sliding-window inference, and Dice, HD95 and normalised
surface Dice computed with the voxel spacing. The pipeline's steps hand a segmentation run to steps.py here.
"""
