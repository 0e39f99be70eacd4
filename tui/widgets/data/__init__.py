"""Widgets of the Data section: the data tree, the training selection and the file preview."""
