"""Choosing the model: an Optuna study over train.* on the train and validation splits (`medflow tune`).

data.py reads only train and validation rows; search.py runs the study and writes the best values where `medflow
run` picks them up (params.tuned.yaml). The test split is never read here: it stays for evaluate and register.
"""
