"""Widgets of the Datasets section: the data tree, the training selection and the file preview."""
