"""The columns medflow adds to a table, named once: every step, tuning, monitoring and the tests read these names.

They start with an underscore so that no source table's own column can be taken for one.
"""

ROW_ID = "_row_id"  # the row's number in the source table: finds a quarantined row without copying its values
PATIENT_KEY = "_patient_key"  # the salted hash that replaces the patient id (privacy/keys.py)
CONTENT_HASH = "_content_hash"  # sha256 of an image's decoded pixels
LABEL = "_label"  # the target as a class index (data/features.py encode_labels)
SPLIT = "_split"  # train, val or test, joined from split's manifest (data/manifest.py load_split)
TIME = "_time"  # a survival table's follow-up time, as a number in the time column's units (data.time)
TIME_OR_SITE = "_split_by"  # split.by=time: the time column as a number; split.by=site: the site (never a feature)
