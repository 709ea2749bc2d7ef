"""The data: the competition's contract, its folds, and per-fold preprocessing of each kind of column.

contract.py  read train/test CSVs, validate them, infer the task, encode labels
folds.py     cross-validation folds, built once per competition (folds.csv, folds.json) and checked on reuse
tabular.py   tabular features fitted on a fold's training rows only
encoders.py  count and out-of-fold target encoding of many-level categories, statistics of text columns
dates.py     date and timestamp columns found, checked and expanded into numbers (year, month, weekday, ...)
tfidf.py     TF-IDF word and character n-grams of a text column, fitted per fold
text.py      text tokenized once by the backbone's tokenizer and cached; batches trimmed to their longest row
image.py     images loaded lazily from disk, resized, normalized
demos.py     demo competitions in Kaggle format from data shipped in installed packages (`make data`)
"""
